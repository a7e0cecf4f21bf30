"""The report's stylesheet: verdict colours (green good, amber review, red bad, grey n/a),
right-aligned tabular numbers, a compact first screen."""

CSS = """
:root{--good:#1e7d32;--good-bg:#e6f4e8;--warn:#9a6700;--warn-bg:#fff4d6;--bad:#b3261e;--bad-bg:#fde7e5;
--na:#6b6b6b;--na-bg:#f0f0f0;--plain:#2f4f7f;--plain-bg:#e8eef8;--line:#d8d8d8}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:20px 28px 60px;
max-width:1240px;color:#1d1d1d;line-height:1.4;font-size:14px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 10px;padding-bottom:4px;border-bottom:2px solid #e4e4e4}
h3{font-size:16px;margin:22px 0 8px}h4{font-size:15px;margin:18px 0 6px}
a{color:#2257a5}
.files{margin:0 0 8px;color:#333;word-break:break-all}
.side{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;font-weight:600;font-size:12px}
.side.a{background:#3b6fb6}.side.b{background:#e07b39}
.counts{list-style:none;padding:0;margin:6px 0 14px;display:flex;flex-wrap:wrap;gap:6px 18px;color:#333}
.how-read{margin:0 0 12px;padding:6px 12px 6px 28px;background:#f7f7f9;border:1px solid var(--line);
border-radius:6px;word-break:break-word}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(210px,1fr));gap:12px;margin:8px 0 14px}
.card{border-radius:8px;padding:10px 14px;border-left:6px solid var(--plain);background:var(--plain-bg)}
.card-title{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#444}
.card-value{font-size:26px;font-weight:700;line-height:1.2}
.card-sub{font-size:12.5px;color:#444}
.reasons{margin:6px 0 0;padding-left:18px;font-size:12.5px;word-break:break-word}
.card details summary{font-size:12.5px;cursor:pointer}
.tone-good{--c:var(--good);--bg:var(--good-bg)}.tone-warn{--c:var(--warn);--bg:var(--warn-bg)}
.tone-bad{--c:var(--bad);--bg:var(--bad-bg)}.tone-na{--c:var(--na);--bg:var(--na-bg)}
.tone-plain{--c:var(--plain);--bg:var(--plain-bg)}
.card[class*=tone-]{border-left-color:var(--c);background:var(--bg)}.card .card-value{color:var(--c)}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;font-weight:600;vertical-align:middle;
color:var(--c);background:var(--bg);border:1px solid var(--c)}
.review{background:#f7f7f9;border:1px solid var(--line);border-radius:6px;padding:8px 12px;margin:0 0 10px}
.most-title{margin:12px 0 6px}
.most{display:grid;grid-template-columns:1fr 1fr;gap:18px;align-items:start}
table{border-collapse:collapse;font-size:13px}
caption{text-align:left;font-weight:600;padding:2px 0 4px}
th,td{border-bottom:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.tensors td.name{min-width:14em}table.tensors th{white-space:normal;padding:3px 6px}table.tensors td{padding:3px 6px}table.tensors td{font-size:12.5px}
table.tensors td:nth-child(3),table.tensors td:nth-child(4){white-space:nowrap}
.structure{margin:8px 0 0;padding-left:20px;word-break:break-word}
td.name{overflow-wrap:anywhere;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px}
table.compact{width:100%}
.na{color:var(--na)}
.toc{background:#fafafa;border:1px solid var(--line);border-radius:6px;padding:4px 18px 10px;margin-top:18px}
.toc h2{border:0;margin:8px 0 4px;font-size:16px}.toc ol{margin:2px 0;padding-left:22px}
.toc ol ol{columns:3;font-size:13px}
.controls{display:flex;flex-wrap:wrap;gap:8px 16px;align-items:center;margin:6px 0 8px}
.controls input,.controls select{font:inherit;padding:2px 6px}
.hint,.note{color:#666;font-size:12.5px}
.scroll{overflow-x:auto}
table.tensors{width:100%}
table.tensors th{cursor:pointer;user-select:none}
table.tensors th[aria-sort=descending]::after{content:" \\25BC";font-size:10px}
table.tensors th[aria-sort=ascending]::after{content:" \\25B2";font-size:10px}
tr.sev-critical td:first-child,tr.sev-high td:first-child{box-shadow:inset 4px 0 var(--bad)}
tr.sev-medium td:first-child{box-shadow:inset 4px 0 var(--warn)}
tbody tr:hover{background:#f6f9ff}
dl.kv{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:2px 18px;margin:4px 0 8px}
dl.kv div{display:flex;gap:8px;border-bottom:1px dotted #e2e2e2;padding:2px 0;min-width:0}
dl.kv div.wide{grid-column:1/-1}
dt{color:#555;white-space:nowrap}dd{margin:0;font-variant-numeric:tabular-nums;word-break:break-word}
details{margin:4px 0 10px}details>summary{cursor:pointer;color:#333;font-weight:600;font-size:13px}
.failed{color:var(--bad)}
figure{margin:10px 0 16px}figcaption{font-weight:600;margin-bottom:4px}
.charts{display:flex;flex-wrap:wrap;gap:8px 24px}
svg.chart text{font-family:system-ui,sans-serif;fill:#222}
svg.chart .label{font-size:11px}svg.chart .value{font-size:10.5px;fill:#444}svg.chart .axis{font-size:11.5px;font-weight:600}
.records{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px;word-break:break-all}
@media print{.controls{display:none}details{display:block}}
"""
