# Seed: 003_2bb8e61896f80c37.txt, lines 186-191, copied verbatim below this header.

result = await box.exec("python", ["-c", "x = bytearray(2**30)"])
completed = await result.wait()

if completed.exit_code == 137:
    print("Process was OOM-killed")
    print(f"stderr: {completed.stderr}")
