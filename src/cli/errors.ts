/** Exit codes: 0 ok, 1 failure, 2 usage error (contract section 1). */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/**
 * A failure the user should read: `main` prints the message (when there is one) and exits with
 * the code. An empty message exits quietly, for verbs whose output already said it all (`diff`).
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT_FAILURE,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** The command line itself is wrong (unknown resource type, bad flag value). */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, EXIT_USAGE);
    this.name = 'UsageError';
  }
}
