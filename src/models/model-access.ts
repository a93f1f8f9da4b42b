import type Stripe from 'stripe';
import { MeterEventReporter } from '../billing/meter-events.js';
import type { Config } from '../config.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Policies } from '../resilience/policies.js';
import type { CustomerStore } from '../store/customer-store.js';
import type { DatabaseHandle } from '../store/database.js';
import { ModelAccessStore } from '../store/model-access-store.js';
import type { SecretBox } from '../store/secret-box.js';
import { hardLimit, parseModelBudgets, periodKey, type ModelBudget } from '../domain/model-budget.js';
import { ModelGateway } from './gateway.js';
import { modelAccessConfig, splitModel, type ModelAccessFragment } from '../workspace/model-access-config.js';
import type { Provider } from '../model-providers/provider-apis.js';
import { AddressBook, anySource, type AddressLister } from '../runtime/customer-addresses.js';
import { Upstream } from '../model-providers/upstream.js';
import { modelUsageView, type ModelUsageAnswer } from './usage-view.js';
import { includedModelAccess, reliesOnIncludedAccess, type IncludedModelAccess } from './included-access.js';

/**
 * Part of the composition root (with server.ts): included model access from the configuration.
 * The store is always there (usage, rotation); the gateway runs, on its own listener, when
 * included access is offered (BLYTZ_MODEL_GATEWAY_LISTEN and the default model's platform key,
 * included-access.ts); the Stripe reporter when STRIPE_METER_EVENT_NAME is set too.
 */

export interface ModelAccessDeps {
  database: DatabaseHandle;
  secretBox: SecretBox;
  customers: Pick<CustomerStore, 'get'>;
  policies: Policies;
  metrics: Metrics;
  logger: Logger;
  /** The runtime's listing of customer containers' addresses (select-runtime.ts). */
  addresses: AddressLister;
  stripe?: Stripe | undefined;
}

const METRICS_INTERVAL_MS = 15_000;
/** Ledger rows are kept past Stripe's 35-day window for meter event timestamps. */
const LEDGER_DAYS = 40;

export class ModelAccess {
  readonly store: ModelAccessStore;
  readonly budgets: Readonly<Record<string, ModelBudget>>;
  readonly defaultModel: string;
  /** Whether customers without a key of their own get a model here, and if not why. */
  readonly included: IncludedModelAccess;
  /** Where customer containers reach the gateway; undefined when it is off. */
  readonly gatewayUrl: string | undefined;
  readonly #config: Config;
  readonly #deps: ModelAccessDeps;
  readonly #gateway: ModelGateway | undefined;
  readonly #upstreams: Upstream[] = [];
  readonly #reporter: MeterEventReporter | undefined;
  #timer: NodeJS.Timeout | undefined;
  #address: string | undefined;

  constructor(config: Config, deps: ModelAccessDeps) {
    this.#config = config;
    this.#deps = deps;
    this.store = new ModelAccessStore(deps.database, deps.secretBox);
    this.budgets = parseModelBudgets(config.BLYTZ_MODEL_BUDGETS);
    this.defaultModel = config.BLYTZ_MODEL_DEFAULT;
    this.included = includedModelAccess(config);
    const listen = config.BLYTZ_MODEL_GATEWAY_LISTEN;
    if (!this.included.offered || !listen) return;
    this.gatewayUrl = (config.BLYTZ_MODEL_GATEWAY_URL ?? `http://${listen}`).replace(/\/+$/, '');

    const upstreams: Partial<Record<Provider, Upstream>> = {};
    if (config.BLYTZ_OPENAI_API_KEY) {
      upstreams.openai = new Upstream('openai', { baseUrl: config.BLYTZ_OPENAI_API_BASE, apiKey: config.BLYTZ_OPENAI_API_KEY });
    }
    if (config.BLYTZ_ANTHROPIC_API_KEY) {
      upstreams.anthropic = new Upstream('anthropic', {
        baseUrl: config.BLYTZ_ANTHROPIC_API_BASE,
        apiKey: config.BLYTZ_ANTHROPIC_API_KEY,
      });
    }
    this.#upstreams.push(...Object.values(upstreams));
    if (deps.stripe && config.STRIPE_METER_EVENT_NAME) {
      this.#reporter = new MeterEventReporter({
        store: this.store,
        stripe: deps.stripe,
        eventName: config.STRIPE_METER_EVENT_NAME,
        guard: deps.policies.guard('stripe'),
        metrics: deps.metrics,
        logger: deps.logger.child({ component: 'stripe-meter' }),
      });
    }
    const reporter = this.#reporter;
    this.#gateway = new ModelGateway({
      store: this.store,
      upstreams,
      guards: { openai: deps.policies.guard('openai'), anthropic: deps.policies.guard('anthropic') },
      sources: config.BLYTZ_MODEL_SOURCE_CHECK === 'off' ? anySource : new AddressBook(deps.addresses),
      budgets: this.budgets,
      allowedModels: allowedModels(config),
      metrics: deps.metrics,
      logger: deps.logger.child({ component: 'model-gateway' }),
      ...(reporter ? { onRecorded: (overage: number) => overage > 0 && reporter.kick() } : {}),
    });
  }

  /** The gateway's listening address (host:port), once started. */
  get address(): string | undefined {
    return this.#address;
  }

  async start(): Promise<void> {
    const listen = this.#config.BLYTZ_MODEL_GATEWAY_LISTEN;
    if (!this.included.offered) {
      // Loud, once, at start: customers who kept "Blytz default" would have no model at all.
      this.#deps.logger.warn(
        { reason: this.included.reason },
        `included model access is not offered: ${this.included.reason}; signup asks for a model key of the customer's own, and customers without one show ModelReady=False (docs/deploy.md, "Model gateway")`,
      );
    }
    if (this.#gateway && listen) {
      const split = listen.lastIndexOf(':');
      const host = listen.slice(0, split).replace(/^\[|\]$/g, '');
      let address;
      try {
        address = await this.#gateway.listen(host, Number(listen.slice(split + 1)));
      } catch (error) {
        throw new Error(
          `the model gateway cannot listen on ${listen} (BLYTZ_MODEL_GATEWAY_LISTEN): ${(error as Error).message}; on Docker this is an address of the host's Docker bridge (the kits use docker0's, 172.17.0.1: see \`ip -4 addr show docker0\`), which must exist first; empty turns included model access off`,
          { cause: error },
        );
      }
      this.#address = `${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
      this.#deps.logger.info(
        {
          listen: this.#address,
          url: this.gatewayUrl,
          model: this.defaultModel,
          sourceCheck: this.#config.BLYTZ_MODEL_SOURCE_CHECK,
        },
        'model gateway listening',
      );
    }
    this.#reporter?.start();
    for (const [plan, budget] of Object.entries(this.budgets)) {
      this.#deps.metrics.modelBudgetTokens.set({ plan, limit: 'included' }, budget.includedTokens);
      this.#deps.metrics.modelBudgetTokens.set({ plan, limit: 'ceiling' }, hardLimit(budget));
    }
    const tick = () =>
      void this.#maintain().catch((error: unknown) => this.#deps.logger.warn({ err: error }, 'model usage metrics failed'));
    this.#timer = setInterval(tick, METRICS_INTERVAL_MS);
    this.#timer.unref();
    tick();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#gateway?.close();
    await this.#reporter?.stop();
    for (const upstream of this.#upstreams) upstream.close();
  }

  /**
   * The openclaw.json fragment for a customer on included access (its credential issued on
   * first use), or undefined when the gateway is off or the customer is cancelled or unknown.
   * Customers with their own key do not call this: their provider is reached directly.
   */
  async configFor(name: string): Promise<ModelAccessFragment | undefined> {
    if (!this.gatewayUrl) return undefined;
    const credential = await this.store.ensureCredential(name);
    if (!credential) return undefined;
    return modelAccessConfig({ gatewayUrl: this.gatewayUrl, credential, model: this.defaultModel });
  }

  /**
   * A new credential now (the old one is refused from this moment), then `render` (a reconcile)
   * so the customer's openclaw.json carries it. Undefined: no such live customer.
   */
  async rotate(
    name: string,
    render: (name: string) => Promise<unknown>,
  ): Promise<{ rotatedAt: Date; rendered: boolean } | undefined> {
    if (!(await this.store.rotateCredential(name))) return undefined;
    const rotatedAt = new Date();
    const rendered = await render(name).then(
      () => true,
      () => false,
    );
    return { rotatedAt, rendered };
  }

  /** For the admin API and the status page. */
  async usage(name: string, now = new Date()): Promise<ModelUsageAnswer | undefined> {
    const customer = await this.#deps.customers.get(name);
    if (!customer) return undefined;
    const budget = this.budgets[customer.spec.plan] ?? { includedTokens: 0 };
    const summary = await this.store.usage(name, periodKey(now));
    const issued = await this.store.credentialIssuedAt(name);
    const ownKey = !reliesOnIncludedAccess(customer.spec.model);
    return {
      ...modelUsageView({
        name,
        plan: customer.spec.plan,
        ownKey,
        gatewayOn: this.gatewayUrl !== undefined,
        budget,
        usage: summary,
        now,
      }),
      ...(issued ? { credentialIssuedAt: issued.toISOString() } : {}),
    };
  }

  async #maintain(): Promise<void> {
    const rows = await this.store.totalsFor(periodKey(new Date()));
    this.#deps.metrics.modelPeriodTokens.reset();
    for (const row of rows) this.#deps.metrics.modelPeriodTokens.set({ customer: row.customer, plan: row.plan }, row.tokens);
    await this.store.pruneLedger(new Date(Date.now() - LEDGER_DAYS * 86_400_000));
  }
}

/** The model ids each provider may be asked for: the default model and BLYTZ_MODEL_ALLOWED. */
export function allowedModels(config: Pick<Config, 'BLYTZ_MODEL_DEFAULT' | 'BLYTZ_MODEL_ALLOWED'>): Record<Provider, string[]> {
  const allowed: Record<Provider, string[]> = { openai: [], anthropic: [] };
  const names = [config.BLYTZ_MODEL_DEFAULT, ...(config.BLYTZ_MODEL_ALLOWED ?? '').split(',')]
    .map((s) => s.trim())
    .filter(Boolean);
  for (const name of names) {
    const { provider, id } = splitModel(name);
    if (!allowed[provider].includes(id)) allowed[provider].push(id);
  }
  return allowed;
}
