#!/bin/sh
# The dashboard's own filters form, submitted unchanged (Environment left at its default blank "all"
# option), sends environment=&... -> before the fix: 400 "must be a non-empty printable string" (environment).
curl -s -o /dev/null -w '%{http_code}\n' -H "authorization: Bearer $TENANT_TOKEN" \
  "$B/dashboard/tenant?from=2026-11-07&to=2026-12-07&environment=&period=2026-12"
curl -s -o /dev/null -w '%{http_code}\n' -H "authorization: Bearer $ADMIN" \
  "$B/dashboard/finance?from=2026-11-07&to=2026-12-07&environment="
