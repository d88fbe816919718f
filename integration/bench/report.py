#!/usr/bin/env python3
"""report.py RESULTS_DIR DOC SVG — the benchmark report from one report.sh run.

Reads the raw files report.sh wrote (lines of `key=value` fields; the first word names the
bench), writes a Markdown section between `<!-- report:begin -->` and `<!-- report:end -->` in
DOC (added after the first paragraph when missing) and a log-log plot of route-reflection
convergence time against route count to SVG. Standard library only. Every ratio is Margay's
figure over its anchor's measured in the same run: below 1 is faster / smaller.
"""

import math
import os
import statistics
import sys

BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"


def parse(path):
    """Lines of `word key=value ...` as dicts (with `_` = the first word), skipping others."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            words = line.split()
            if not words or "=" not in line:
                continue
            row = {"_": words[0], "_words": words}
            for w in words:
                if "=" in w:
                    k, v = w.split("=", 1)
                    try:
                        row[k] = float(v)
                    except ValueError:
                        row[k] = v
            rows.append(row)
    return rows


def med(rows, key, **match):
    vals = [r[key] for r in rows if isinstance(r.get(key), float)
            and all(r.get(k) == v for k, v in match.items())]
    return statistics.median(vals) if vals else None


def num(x, prec=3):
    return "–" if x is None else f"{x:.{prec}f}"


def count(n):
    """10k, 100k, 1M."""
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def ratio(a, b):
    return None if a is None or not b else a / b


class Table:
    def __init__(self):
        self.rows = []

    def add(self, measure, margay, anchor_name, anchor, r, goal="", ok=None):
        verdict = ""
        if ok is not None and r is not None:
            verdict = " met" if ok(r) else " **not met**"
        self.rows.append(f"| {measure} | {margay} | {anchor_name} {anchor} | "
                         f"{'**' + num(r, 2) + '**' if r is not None else '–'} | {goal}{verdict} |")

    def md(self):
        return "\n".join(["| measure | Margay | anchor (same run) | ratio | goal |",
                          "|---|---|---|---|---|"] + self.rows)


def rr_section(rr, t):
    if not rr:
        return "", []
    ok = [r for r in rr if r.get("status") == "ok"]
    ns = sorted({int(r["n"]) for r in ok})
    k = 4.0
    for n in ns:
        p = med(ok, "converge_s", target="project", n=float(n), k=k)
        for anchor in ("bird", "frr"):
            a = med(ok, "converge_s", target=anchor, n=float(n), k=k)
            if p is not None and a is not None:
                t.add(f"route reflection, {count(n)} routes → 4 clients, converge (s)", num(p),
                      anchor.upper() if anchor == "frr" else "BIRD", num(a), ratio(p, a))
        p = med(ok, "rss_mib", target="project", n=float(n), k=k)
        a = med(ok, "rss_mib", target="bird", n=float(n), k=k)
        if p is not None and a is not None:
            t.add(f"route reflection, {count(n)} routes, peak RSS (MiB)", num(p, 1), "BIRD", num(a, 1),
                  ratio(p, a))
    lines = ["| target | N | converge_s | rss_mib | cpu_s | runs ok/all |", "|---|---|---|---|---|---|"]
    series = {}
    for target in sorted({r["target"] for r in rr}):
        for n in sorted({int(r["n"]) for r in rr if r["target"] == target}):
            m = dict(target=target, n=float(n), k=k)
            runs = [r for r in rr if all(r.get(a) == b for a, b in m.items())]
            good = [r for r in runs if r.get("status") == "ok"]
            c = med(good, "converge_s", **m)
            lines.append(f"| {target} | {n} | {num(c)} | {num(med(good, 'rss_mib', **m), 1)} | "
                         f"{num(med(good, 'cpu_s', **m), 2)} | {len(good)}/{len(runs)} |")
            if c is not None:
                series.setdefault(target, []).append((n, c))
    return "\n".join(lines), series


def svg_plot(series, path):
    """Log-log lines of converge_s against N, one per target, as a small standalone SVG."""
    if not series:
        return False
    w, h, l, r, top, b = 560, 340, 70, 110, 20, 50
    xs = [n for s in series.values() for n, _ in s]
    ys = [c for s in series.values() for _, c in s]
    x0, x1 = math.log10(min(xs)), math.log10(max(xs))
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1

    def px(n):
        return l + (math.log10(n) - x0) / (x1 - x0) * (w - l - r)

    def py(c):
        return h - b - (math.log10(c) - y0) / (y1 - y0) * (h - top - b)

    colors = {"project": "#c0392b", "bird": "#2c7fb8", "frr": "#31a354", "gobgp": "#756bb1"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="12"><rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{l}" y1="{h - b}" x2="{w - r}" y2="{h - b}" stroke="black"/>',
           f'<line x1="{l}" y1="{top}" x2="{l}" y2="{h - b}" stroke="black"/>']
    for n in sorted(set(xs)):
        out.append(f'<text x="{px(n):.1f}" y="{h - b + 16}" text-anchor="middle">{n:,}</text>')
    for e in range(y0, y1 + 1):
        y = py(10 ** e)
        out.append(f'<line x1="{l}" y1="{y:.1f}" x2="{w - r}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{l - 6}" y="{y + 4:.1f}" text-anchor="end">{10 ** e:g} s</text>')
    out.append(f'<text x="{(l + w - r) / 2}" y="{h - 10}" text-anchor="middle">routes reflected to 4 clients</text>')
    for i, (target, pts) in enumerate(sorted(series.items())):
        c = colors.get(target, "#333")
        pts = sorted(pts)
        out.append('<polyline fill="none" stroke-width="2" stroke="%s" points="%s"/>'
                   % (c, " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in pts)))
        out += [f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="3" fill="{c}"/>' for n, v in pts]
        name = "Margay" if target == "project" else target.upper() if target == "frr" else target.capitalize()
        out.append(f'<text x="{w - r + 10}" y="{top + 16 + 18 * i}" fill="{c}">{name}</text>')
    out.append("</svg>")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return True


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: report.py RESULTS_DIR DOC SVG")
    d, doc, svg = sys.argv[1:]
    p = lambda name: parse(os.path.join(d, name))  # noqa: E731
    meta = open(os.path.join(d, "meta.txt")).read().split("\n") if os.path.exists(os.path.join(d, "meta.txt")) else []
    t = Table()

    rr_detail, series = rr_section([r for r in p("rr.txt") if r["_"] == "rr_bench"], t)

    for a in (r for r in p("agent.txt") if r["_"] == "agent"):
        n = int(a["n"])
        t.add(f"install {count(n)} BGP-learned routes into the kernel (s)", num(a["install_s"]), "BIRD",
              num(a["bird_install_s"]), ratio(a["install_s"], a["bird_install_s"]))
        t.add(f"install {count(n)} BGP-learned routes into the kernel (s)", num(a["install_s"]),
              "batched netlink `nl_add`", num(a["nl_add_s"]), ratio(a["install_s"], a["nl_add_s"]), "≤ 1.25",
              lambda x: x <= 1.25)
        t.add(f"agent RSS, {int(a['eps'])} endpoints + {int(a['remote']) // 1000}k remote routes (MiB)",
              f"{num(a['rss_mib'], 1)} (anon {num(a['anon_mib'], 1)})", "goal", "30",
              ratio(a["rss_mib"], 30.0), "≤ 1.00", lambda x: x <= 1.0)
        t.add("endpoint_up → route in the kernel, p50 / p99 (ms)",
              f"{num(a['up_p50_ms'], 2)} / {num(a['up_p99_ms'], 2)}", "", "", None)

    for r in (r for r in p("routes.txt") if r["_"] == "routes"):
        t.add(f"route driver: {count(int(r['n']))} routes added (s)", num(r["margay_add_s"]), "`nl_add`",
              num(r["nl_add_s"]), r["add_ratio"])
        t.add(f"route driver: {count(int(r['n']))} routes deleted (s)", num(r["margay_del_s"]), "`nl_del`",
              num(r["nl_del_s"]), r["del_ratio"])

    ipt = [r for r in p("ipt.txt") if "noflush_1chg_s" in r]
    for r in (r for r in p("policy.txt") if "policies" in r):
        pol, eps = int(r["policies"]), int(r["endpoints"])
        t.add(f"NetworkPolicy: {pol} policies over {eps} endpoints, from nothing (s)", num(r["margay_s"]),
              "plain `iptables-restore`", num(r["plain_restore_s"]), r["ratio"], "≤ 1.2", lambda x: x <= 1.2)
        t.add(f"NetworkPolicy: a remote pod's label change at {eps} endpoints (ms)",
              num(r["remote_label_change_ms"], 1), "", "", None)
        # The anchor: the host's backend (nft here) at the size closest to the endpoint count.
        nf = min(ipt, key=lambda x: (x.get("backend") != "nft", abs(x["n"] - eps)), default=None)
        anchor = None if nf is None else 1000 * nf["noflush_1chg_s"]
        t.add(f"NetworkPolicy: a local pod's label change at {eps} endpoints (ms)",
              num(r["local_label_change_ms"], 1),
              f"`ipt_bench.sh {int(nf['n'])}` noflush ({nf.get('backend')})" if nf else "", num(anchor, 1),
              ratio(r["local_label_change_ms"], anchor), f"≤ 50 ms: {'met' if r['local_label_change_ms'] <= 50 else '**not met**'}")

    for r in (r for r in p("cni.txt") if r["_"] == "cni"):
        what = next(w for w in r["_words"] if w.endswith("_ms") and "=" not in w)
        t.add(f"CNI {what.replace('_ms', '').replace('_', ' ')} (ms)", num(r["margay"], 1), "ptp + host-local",
              num(r["ref"], 1), r["ratio"])

    ipam = p("ipam.txt")
    for tasks in sorted({r["tasks"] for r in ipam if r.get("op") == "auto_assign"}):
        a = med(ipam, "per_s", op="auto_assign", tasks=tasks)
        raw = med(ipam, "per_s", op="raw_etcd_create", tasks=tasks)
        t.add(f"IPAM allocations on etcd, {int(tasks)} concurrent (per s)", num(a, 0), "raw etcd creates",
              num(raw, 0), ratio(a, raw), "(higher is better)")

    for r in p("lab.txt"):
        if "agent_rss_mib_p50" in r:
            t.add(f"agent RSS in a {int(r['nodes'])}-node lab with {int(r['pods'])} pods, p50 / max (MiB)",
                  f"{num(r['agent_rss_mib_p50'], 1)} / {num(r['agent_rss_mib_max'], 1)}", "goal", "30",
                  ratio(r["agent_rss_mib_max"], 30.0), "≤ 1.00", lambda x: x <= 1.0)
        if "p99_ms" in r and r["_"] == "lab":
            t.add(f"pod ready → reachable from another node, p50 / p99 (ms), {int(r['n'])} pods"
                  f" ({int(r['unreachable'])} never reached)",
                  f"{num(r['p50_ms'], 1)} / {num(r['p99_ms'], 1)}", "goal", "200", ratio(r["p99_ms"], 200.0),
                  "p99 ≤ 200 ms", lambda x: x <= 1.0)

    plotted = svg_plot(series, svg)
    rel = os.path.relpath(svg, os.path.dirname(doc) or ".")
    body = [BEGIN, "", "## Report (generated by `integration/bench/report.sh`)", "",
            "Run: " + "; ".join(m for m in meta if m) + f". Raw output: `{os.path.relpath(d)}`.",
            "Ratios are Margay's figure over the anchor's, measured in the same run (below 1: faster or smaller;",
            "for rates, above 1 is better). Medians over the repetitions.", "", t.md(), ""]
    if rr_detail:
        body += ["### Route reflection, 4 clients (median over runs)", "", rr_detail, ""]
    if plotted:
        body += [f"![route reflection convergence time against route count]({rel})", ""]
    body.append(END)
    text = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + "\n".join(body) + text[text.index(END) + len(END):]
    else:
        head, sep, rest = text.partition("\n\n")
        second, sep2, rest2 = rest.partition("\n\n")
        text = head + sep + second + sep2 + "\n".join(body) + "\n\n" + rest2
    with open(doc, "w") as f:
        f.write(text)
    print("\n".join(body))


if __name__ == "__main__":
    main()
