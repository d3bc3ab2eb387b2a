# Seed: 003_2bb8e61896f80c37.txt, lines 16-25, copied verbatim below this header.

import boxlite
from boxlite.boxlite import SecurityOptions

options = boxlite.BoxOptions(
    image="python:slim",
    cpus=2,
    memory_mib=1024,
    working_dir="/workspace",
    security=SecurityOptions.maximum(),
)
