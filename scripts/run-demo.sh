#!/bin/sh
# `make run`: a working deployment on loopback with the embedded SQLite store: a primary, an
# Owner, one workspace proxy ("newyork", over TLS with a certificate made here, started with
# exactly the environment variables of the admin guide), and a demo workspace whose agent holds
# tunnels to both regions, with a small web app behind it. Runs in the foreground; Ctrl-C stops
# everything it started.
set -eu
cd "$(dirname "$0")/.."
BIN=$(pwd)/build/coder
STATE=$(pwd)/.run
PRIMARY_ADDR=${PRIMARY_ADDR:-127.0.0.1:3000}
PROXY_HTTP=${PROXY_HTTP:-127.0.0.1:3001}
PROXY_TLS=${PROXY_TLS:-127.0.0.1:3444}
APP_ADDR=${APP_ADDR:-127.0.0.1:3080}
EMAIL=admin@example.com
USERNAME=admin
PASSWORD=${CODER_DEMO_PASSWORD:-Demo-Password-1234!}
mkdir -p "$STATE"

# A CA and a certificate for the proxy, made once.
if [ ! -f "$STATE/proxy.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=coder-demo-ca" \
        -keyout "$STATE/ca.key" -out "$STATE/ca.pem" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$STATE/proxy.key" -out "$STATE/proxy.csr" >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:*.newyork.localhost\n' > "$STATE/ext"
    openssl x509 -req -in "$STATE/proxy.csr" -CA "$STATE/ca.pem" -CAkey "$STATE/ca.key" \
        -CAcreateserial -days 365 -extfile "$STATE/ext" -out "$STATE/proxy.pem" >/dev/null 2>&1
fi

pids=""
stop() {
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    echo "Stopped."
}
trap 'stop; exit 0' INT TERM

export CODER_CONFIG_DIR="$STATE/client"
# The primary health-checks the proxy over TLS, so it trusts the demo CA.
SSL_CERT_FILE="$STATE/ca.pem" "$BIN" server --http-address "$PRIMARY_ADDR" --access-url "http://$PRIMARY_ADDR" \
    --wildcard-access-url "*.primary.localhost" --global-config "$STATE/primary" \
    > "$STATE/primary.log" 2>&1 &
pids="$!"
for _ in $(seq 1 100); do
    curl -fsS "http://$PRIMARY_ADDR/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://$PRIMARY_ADDR/healthz" >/dev/null || { cat "$STATE/primary.log"; stop; exit 1; }

if [ ! -f "$CODER_CONFIG_DIR/session" ]; then
    "$BIN" login "http://$PRIMARY_ADDR" --first-user-username "$USERNAME" \
        --first-user-email "$EMAIL" --first-user-password "$PASSWORD" \
        --first-user-full-name "Demo Admin" --first-user-trial=false >/dev/null
fi

if "$BIN" wsproxy ls -o json | grep -q '"name": "newyork"'; then
    TOKEN=$("$BIN" wsproxy regenerate-token newyork --only-token)
else
    TOKEN=$("$BIN" wsproxy create --name=newyork --display-name="USA East" \
        --icon="/emojis/2194.png" --only-token)
fi

CODER_PRIMARY_ACCESS_URL="http://$PRIMARY_ADDR" \
CODER_PROXY_SESSION_TOKEN="$TOKEN" \
CODER_HTTP_ADDRESS="$PROXY_HTTP" \
CODER_TLS_ADDRESS="$PROXY_TLS" \
CODER_ACCESS_URL="https://$PROXY_TLS" \
CODER_WILDCARD_ACCESS_URL="*.newyork.localhost" \
CODER_TLS_ENABLE=true \
CODER_TLS_CLIENT_AUTH=none \
CODER_TLS_CERT_FILE="$STATE/proxy.pem" \
CODER_TLS_KEY_FILE="$STATE/proxy.key" \
SSL_CERT_FILE="$STATE/ca.pem" \
    "$BIN" wsproxy server > "$STATE/proxy.log" 2>&1 &
pids="$pids $!"

status=""
for _ in $(seq 1 150); do
    status=$("$BIN" wsproxy ls -c name,"proxy status" | awk '$1=="newyork"{print $2}')
    [ "$status" = ok ] && break
    sleep 0.2
done

# The demo workspace: a static site as its app, and its agent. The agent token is shown once,
# so it is kept (0600) in the state directory; without it the workspace is made again.
mkdir -p "$STATE/app"
printf '<!DOCTYPE html><title>Demo app</title><h1>Hello from the demo workspace</h1>\n' \
    > "$STATE/app/index.html"
python3 -m http.server --bind "${APP_ADDR%:*}" "${APP_ADDR#*:}" --directory "$STATE/app" \
    > "$STATE/app.log" 2>&1 &
pids="$pids $!"
if [ ! -s "$STATE/agent-token" ] || ! "$BIN" list -o json | grep -q '"name": "demo"'; then
    "$BIN" delete demo -y >/dev/null 2>&1 || true
    (umask 077; "$BIN" create demo --app "site=http://$APP_ADDR,name=Demo site" |
        sed -n 's/^Agent token: //p' > "$STATE/agent-token")
fi
CODER_AGENT_URL="http://$PRIMARY_ADDR" CODER_AGENT_TOKEN_FILE="$STATE/agent-token" \
SSL_CERT_FILE="$STATE/ca.pem" \
    "$BIN" agent > "$STATE/agent.log" 2>&1 &
pids="$pids $!"
healthy=""
for _ in $(seq 1 100); do
    healthy=$("$BIN" list -c workspace,healthy | awk '$1=="admin/demo"{print $2}')
    [ "$healthy" = true ] && break
    sleep 0.1
done

# The demo app through each region, as a user would open it (the session from the CLI's login).
SESSION=$(cat "$CODER_CONFIG_DIR/session")
app_check() {
    for _ in $(seq 1 50); do
        curl -fsS --cacert "$STATE/ca.pem" -H "Coder-Session-Token: $SESSION" "$1" 2>/dev/null |
            grep -q "Hello from the demo workspace" && { echo ok; return; }
        sleep 0.2
    done
    echo "NOT REACHABLE (see the logs)"
}
via_primary=$(app_check "http://$PRIMARY_ADDR/@$USERNAME/demo/apps/site/")
via_proxy=$(app_check "https://$PROXY_TLS/@$USERNAME/demo/apps/site/")

cat <<MSG

Coder is running on loopback (state in $STATE):

  Primary (dashboard/API):  http://$PRIMARY_ADDR
  Workspace proxy newyork:  https://$PROXY_TLS  (and http://$PROXY_HTTP; CA: $STATE/ca.pem)
  Owner login:              $EMAIL / $PASSWORD   (username: $USERNAME)
  Demo workspace:           admin/demo, agent "main", app "site" -> http://$APP_ADDR
  CLI:                      export CODER_CONFIG_DIR=$STATE/client; $BIN wsproxy ls; $BIN list

  The demo app through the primary ($via_primary):
    http://$PRIMARY_ADDR/@$USERNAME/demo/apps/site/
  and through the newyork proxy ($via_proxy), straight over the agent's tunnel to it:
    https://$PROXY_TLS/@$USERNAME/demo/apps/site/
  e.g. curl --cacert $STATE/ca.pem -H "Coder-Session-Token: \$(cat $STATE/client/session)" \\
         https://$PROXY_TLS/@$USERNAME/demo/apps/site/
  Port forwarding (fastest region):
    SSL_CERT_FILE=$STATE/ca.pem CODER_CONFIG_DIR=$STATE/client $BIN port-forward demo --tcp 8080:${APP_ADDR#*:}

MSG
"$BIN" wsproxy ls
echo
"$BIN" list -c workspace,status,healthy
echo
echo "Logs: $STATE/primary.log, $STATE/proxy.log, $STATE/agent.log.  Press Ctrl-C to stop."
wait
