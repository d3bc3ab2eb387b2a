# Seed: 000_f5fe8764b5ce4f9e.txt, lines 104-109, copied verbatim below this header.

boxlite.SimpleBox(
    image="python:slim",
    cpus=2,             # CPU cores (default: 1)
    memory_mib=4096,    # Memory in MiB (default: 2048)
    disk_size_gb=10,    # Persistent disk in GB (default: ephemeral)
)
