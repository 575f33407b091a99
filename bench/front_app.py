"""The bare FastAPI hello app under uvicorn with Hearth's bounded protocol or uvicorn's own:
`python -m bench.front_app PORT bounded|off` (for `bench.http_front`)."""

from __future__ import annotations

import sys

import uvicorn

from hearth.api.http_limits import HttpLimits, protocol_for

if __name__ == "__main__":
    port, mode = int(sys.argv[1]), sys.argv[2]
    http = protocol_for(HttpLimits()) if mode == "bounded" else "httptools"
    uvicorn.run(
        "bench.baseline_app:app", port=port, loop="uvloop", http=http, ws="none", log_level="warning", access_log=False
    )
