"""test_summary: one closing line over the meson test logs of several build dirs.

Prints every non-passing test with its build dir, then 'N passed, N failed, N skipped'; exits 1
when anything failed (or a log is missing, which means a suite did not run)."""
import json
import sys

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        print(f"missing test log {path}: {e}")
        failed += 1
        continue
    for line in lines:
        t = json.loads(line)
        result = t.get("result")
        if result in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif result == "SKIP":
            skipped += 1
            print(f"skipped: {path.split('/')[0]} {t['name']}")
        else:
            failed += 1
            print(f"FAILED:  {path.split('/')[0]} {t['name']} ({result})")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
