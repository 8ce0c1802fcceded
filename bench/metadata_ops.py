#!/usr/bin/env python3
"""create, stat and unlink of N files in DIR; prints one JSON line of operations per second."""
import json
import os
import sys
import time

directory, count = sys.argv[1], int(sys.argv[2])
os.makedirs(directory, exist_ok=True)
names = [os.path.join(directory, f"f{i:06d}") for i in range(count)]
rates = {}
start = time.perf_counter()
for name in names:
    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644))
rates["create"] = count / (time.perf_counter() - start)
start = time.perf_counter()
for name in names:
    os.stat(name)
rates["stat"] = count / (time.perf_counter() - start)
start = time.perf_counter()
for name in names:
    os.unlink(name)
rates["unlink"] = count / (time.perf_counter() - start)
print(json.dumps(rates))
