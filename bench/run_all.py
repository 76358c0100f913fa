"""`make bench`: run every bench/bench_*.py in turn; each prints its own tables."""
import subprocess
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
failed = []
for script in sorted(here.glob("bench_*.py")):
    print(f"\n===== {script.name} =====", flush=True)
    if subprocess.run([sys.executable, str(script)]).returncode != 0:
        failed.append(script.name)
if failed:
    print(f"\nfailed: {', '.join(failed)}")
sys.exit(1 if failed else 0)
