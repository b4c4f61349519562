#!/bin/bash
# README: OUTLAY_URL "a name with no extension such as .outlay or data/prod, is a home directory".
# gateway.md: keys.db lives "beside the ledger". Follow gateway.md's first two commands with such a home.
O="${O:-outlay}"; PORT=${PORT:-18101}; UP=${UP:-http://127.0.0.1:18100/v1}
W=$(mktemp -d); cd "$W"
export OUTLAY_URL=$W/data/prod OUTLAY_UPSTREAM_OPENAI=$UP OPENAI_API_KEY=sk-fake
KEY=$($O keys create --tenant acme --feature chat --budget 25.00/month 2>/dev/null)
echo "key store files:"; find "$W" -name 'keys.db'
call() { curl -s -o /dev/null -w "%{http_code}\n" -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":5}' http://127.0.0.1:$PORT/v1/chat/completions; }
for start in 1 2; do
  $O gateway --port $PORT > gw$start.log 2>&1 & pid=$!
  for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:$PORT/v1/models && break; sleep 0.2; done
  echo "gateway start $start: $(call)"
  kill $pid; wait $pid 2>/dev/null
done
echo "after the restarts, keys list:"; $O keys list
find "$W" -name 'keys.db'
