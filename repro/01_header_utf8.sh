#!/bin/sh
# Needs `outlay serve` on $B with a fake upstream; $S a key of tenant 'ünï→💸', $S2 a key of tenant acme.
# Before the fix: 403 forged_attribution (tenant read as latin-1 'Ã¼nÃ¯...'), and feature recorded as 'cafÃ©'.
curl -s -XPOST $B/v1/chat/completions -H "authorization: Bearer $S" -H 'content-type: application/json' \
  -H 'X-Outlay-Tenant: ünï→💸' -d '{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}' -w '\n%{http_code}\n'
curl -s -XPOST $B/v1/chat/completions -H "authorization: Bearer $S2" -H 'content-type: application/json' \
  -H 'X-Outlay-Feature: café' -d '{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}' -o /dev/null
curl -s -H "authorization: Bearer $ADMIN" "$B/api/v1/usage/breakdown?by=feature" | grep -o '"feature":"caf[^"]*"'
