# peak_rss PID: the peak resident memory of a process and its descendants (the
# sum of their peaks), in MiB. For the benchmarks.
peak_rss() {
  python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1])
children = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(p))
total, todo = 0, [root]
while todo:
    p = todo.pop()
    todo += children.get(p, [])
    try:
        for line in open(f"/proc/{p}/status"):
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    except OSError:
        pass
print(f"{total / 1024:.0f}")
PY
}
