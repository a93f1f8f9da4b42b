#!/bin/sh
# One HTTP connection of the stand-in image (run by `nc -ll -e` in stub-start). Like the OpenClaw
# gateway's /readyz, it shows its details (`uptimeMs`) only to a caller whose bearer token is the
# gateway token in force: `gateway.auth.token` of openclaw.json, read at each request, so a new
# token written there is in force at once (OpenClaw reloads it in about half a second). The
# controller's token probe (a template's configProbe) sees a warm pool slot take a customer's
# configuration this way. Its answer is /tmp/www/readyz, as for httpd (a test may write another
# there). Every other request goes to busybox httpd, which serves /tmp/www.
home=${OPENCLAW_HOME:-/home/node/.openclaw}
www=${STUB_WWW:-/tmp/www}
cr=$(printf '\r')
IFS= read -r request || exit 0
request=${request%"$cr"}
headers=
auth=
while IFS= read -r line; do
  line=${line%"$cr"}
  [ -z "$line" ] && break
  case $line in
    [Aa]uthorization:*) auth=${line#*:} ;;
  esac
  headers="$headers$line$cr
"
done
set -- $request
if [ "$1" = GET ] && [ "${2%%\?*}" = /readyz ]; then
  token=$(sed -n 's/^ *"token": *"\([^"]*\)".*/\1/p' "$home/openclaw.json" 2>/dev/null | head -n 1)
  given=$(echo "$auth" | sed -n 's/^ *[Bb]earer  *//p')
  # The answer the folder holds (tests write other answers there); the details only on a plain ready one.
  body=$(cat "$www/readyz" 2>/dev/null) || body='{"ready":true}'
  if [ "$body" = '{"ready":true}' ] && [ -n "$token" ] && [ "$given" = "$token" ]; then
    started=$(cat /tmp/stub-started 2>/dev/null || echo 0)
    body="{\"ready\":true,\"uptimeMs\":$(( ($(date +%s) - started) * 1000 ))}"
  fi
  printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "${#body}" "$body"
  exit 0
fi
printf '%s\r\n%s\r\n' "$request" "$headers" | exec httpd -i -h "$www"
