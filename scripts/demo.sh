#!/usr/bin/env bash
# `make serve`: build the tiny base (once), train and publish the two demo tenants with
# `loramux trainer demo` (it skips a tenant the registry already has), then serve the base and
# both tenants and print an example request.
set -euo pipefail
DEMO=${DEMO:-.demo}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
BIN=${VENV:-.venv}/bin
REGISTRY=${REGISTRY:-$DEMO/registry}  # or s3://BUCKET/PREFIX (deploy/compose)

if [[ ! -f $DEMO/base/config.json ]]; then
  echo "==> building the tiny offline base in $DEMO/base"
  "$BIN/loramux" base build-tiny --out "$DEMO/base" >/dev/null
fi
echo "==> demo tenants demo/pirate (LoRA) and demo/robot (QLoRA) in $REGISTRY (each trained once, about a minute)"
"$BIN/loramux" trainer demo --base "$DEMO/base" --base-id tiny --registry "$REGISTRY" --work-dir "$DEMO"

echo "==> starting the server on http://$HOST:$PORT (vLLM engine start takes ~30 s)"
"$BIN/loramux" serve --base "$DEMO/base" --served-name tiny --dtype float32 --registry "$REGISTRY" \
  --adapter demo/pirate --adapter demo/robot --host "$HOST" --port "$PORT" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' INT TERM EXIT
until "$BIN/python" -c "import httpx,sys; sys.exit(httpx.get('http://$HOST:$PORT/health').status_code != 200)" 2>/dev/null; do
  kill -0 $server 2>/dev/null || { echo "the server exited; see the messages above" >&2; exit 1; }
  sleep 1
done
cat <<EXAMPLE

loramux is serving tiny, demo/pirate and demo/robot on http://$HOST:$PORT/v1. Try:

  curl -s http://$HOST:$PORT/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model": "demo/pirate", "messages": [{"role": "user", "content": "Tell me about the robot builds a small boat."}], "max_tokens": 32, "temperature": 0}'

or, with the openai client (.venv/bin/python):

  from openai import OpenAI
  client = OpenAI(base_url="http://$HOST:$PORT/v1", api_key="unused")
  for model in ("tiny", "demo/pirate", "demo/robot"):
      r = client.chat.completions.create(model=model, max_tokens=32, temperature=0,
                                         messages=[{"role": "user", "content": "Can you explain a dog opens the letter?"}])
      print(model, "->", r.choices[0].message.content)

Ctrl-C stops the server.
EXAMPLE
wait $server
