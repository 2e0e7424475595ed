#!/usr/bin/env bash
# `make serve`: build the tiny base, train the two demo tenants with `trainer` (once; the
# registry keeps them), then serve the base and both tenants and print an example request.
set -euo pipefail
DEMO=${DEMO:-.demo}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
BIN=${VENV:-.venv}/bin
REGISTRY=$DEMO/registry
declare -A METHOD=([pirate]=lora [robot]=qlora)

if [[ ! -f $DEMO/base/config.json ]]; then
  echo "==> building the tiny offline base in $DEMO/base"
  "$BIN/loramux" base build-tiny --out "$DEMO/base" >/dev/null
fi
"$BIN/trainer" demo-data --out "$DEMO/data" >/dev/null
for persona in pirate robot; do
  if "$BIN/loramux" adapters show "demo/$persona" --store "$REGISTRY" >/dev/null 2>&1; then
    echo "==> demo/$persona is already in $REGISTRY"
    continue
  fi
  echo "==> training demo/$persona (${METHOD[$persona]}, about a minute)"
  "$BIN/trainer" add-tenant --tenant demo --name "$persona" --method "${METHOD[$persona]}" \
    --data "$DEMO/data/$persona.train.jsonl" --eval "$DEMO/data/$persona.eval.jsonl" \
    --base "$DEMO/base" --base-id tiny --registry "$REGISTRY" --output-dir "$DEMO/runs/$persona"
done

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
