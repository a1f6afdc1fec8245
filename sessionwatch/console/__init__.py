"""The operator console (`sessionwatch console`): a Starlette app of server-rendered pages, charts
and a JSON API over the archive, where analysts watch findings live, follow a revocation to the
session's timeline, give verdicts and revoke by hand. Security model: README "The console"."""
