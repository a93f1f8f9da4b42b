#!/bin/sh
# Stand-in for the `openclaw` CLI inside the test image. Supports only what the control plane
# calls: `openclaw pairing approve telegram <CODE>`. A code is pending when a line equal to it is
# in $OPENCLAW_HOME/pending-pairing-codes (tests write that file into the customer's workspace).
# Every call is recorded in /tmp/openclaw-calls.log so tests can see the command really ran.
home=${OPENCLAW_HOME:-/home/node/.openclaw}
echo "$*" >> /tmp/openclaw-calls.log
if [ "$1 $2 $3" != "pairing approve telegram" ] || [ -z "$4" ]; then
  echo "usage: openclaw pairing approve telegram <CODE>" >&2
  exit 2
fi
case $4 in
  SLOW*)
    # Like the real CLI at half a CPU (about half a minute): held until the test releases it.
    for _ in $(seq 1 600); do [ -e "$home/release-$4" ] && break; sleep 0.1; done ;;
esac
if [ "$4" = FAIL0078 ]; then
  # How OpenClaw failed when its config was mounted read-only: not an answer about the code.
  echo "Error: EBUSY: resource busy or locked, rename '$home/openclaw.json.tmp' -> '$home/openclaw.json'" >&2
  exit 78
fi
if [ -f "$home/pending-pairing-codes" ] && grep -qx "$4" "$home/pending-pairing-codes"; then
  echo "Approved telegram pairing $4"
  exit 0
fi
echo "No pending pairing request for code $4 (wrong or expired)" >&2
exit 1
