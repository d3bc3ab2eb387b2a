# Seed: 003_2bb8e61896f80c37.txt, lines 174-179, copied verbatim below this header.

options = boxlite.BoxOptions(
    image="python:slim",
    cpus=1,             # Cap CPU usage
    memory_mib=512,     # Hard memory limit
    security=SecurityOptions.maximum(),
)
