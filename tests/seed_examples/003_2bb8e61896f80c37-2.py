# Seed: 003_2bb8e61896f80c37.txt, lines 35-41, copied verbatim below this header.

from boxlite.boxlite import SecurityOptions

security = SecurityOptions.maximum()

# Customize if needed
security.max_open_files = 2048
security.network_enabled = False  # Disable network for strict isolation
