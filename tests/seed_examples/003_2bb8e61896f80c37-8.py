# Seed: 003_2bb8e61896f80c37.txt, lines 159-168, copied verbatim below this header.

from boxlite.boxlite import SecurityOptions

security = SecurityOptions.maximum()
security.network_enabled = False

options = boxlite.BoxOptions(
    image="python:slim",
    security=security,
    # No ports= means no incoming connections either
)
