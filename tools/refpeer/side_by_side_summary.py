"""Medians of cpu_side_by_side.sh's runs.jsonl files (one or more, pooled): per case, each engine's median wall
seconds and CPU seconds over all its rounds (every timed run of every round), the load
averages seen, and forgeflow's speed-up (ComfyUI's median / forgeflow's)."""
import json
import statistics
import sys


def runs(e):
    """Wall and CPU seconds of each timed run in one record."""
    r = e['r']
    if e['case'].startswith('txt2img'):
        return [r['wall_s']], [r.get('cpu_s')]
    if e['engine'] == 'forgeflow':
        return r['runs_s'], r.get('cpu_s') or []
    return r['sec'], r.get('cpu_s') or []


cases = {}
for line in (ln for path in sys.argv[1:] for ln in open(path)):
    e = json.loads(line)
    c = cases.setdefault(e['case'], {}).setdefault(e['engine'], {'wall': [], 'cpu': [], 'load': [], 'rounds': 0, 'rss': [], 'threads': set()})
    w, p = runs(e)
    c['wall'] += w
    c['cpu'] += [x for x in p if x is not None]
    c['load'] += e['load']
    c['rounds'] += 1
    c['threads'].add(e['r'].get('threads', '?'))
    rss = e['r'].get('peak_rss_bytes') or 1024 * e['r'].get('peak_rss_kb', 0)
    c['rss'].append(rss / 2**30)
print('| case | engine | threads | rounds | runs | median wall s | median CPU-s | load seen | peak RSS GiB | speed-up (wall) | speed-up (CPU-s) |')
print('| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |')
for case, eng in cases.items():
    med = {k: (statistics.median(v['wall']), statistics.median(v['cpu']) if v['cpu'] else None) for k, v in eng.items()}
    for k, v in eng.items():
        up = upc = ''
        if k == 'forgeflow' and 'comfyui' in med:
            up = f"{med['comfyui'][0] / med[k][0]:.2f}×"
            if med[k][1] and med['comfyui'][1]:
                upc = f"{med['comfyui'][1] / med[k][1]:.2f}×"
        cpu = f'{med[k][1]:.2f}' if med[k][1] else '–'
        rss = f"{max(v['rss']):.2f}" if max(v['rss']) else '–'
        threads = ','.join(str(t) for t in sorted(v['threads'], key=str))
        print(f"| {case} | {k} | {threads} | {v['rounds']} | {len(v['wall'])} | {med[k][0]:.2f} | {cpu} | {min(v['load']):.1f}–{max(v['load']):.1f} | {rss} | {up} | {upc} |")
