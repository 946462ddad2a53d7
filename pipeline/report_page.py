"""The frame of ``report.html``: its security policy, CSS and script (sorting and filtering).

The page loads nothing from the network: CSS and script are inline, pictures are ``data:`` URIs
and the only files it reads are the clips and subtitles beside it (``media-src 'self'``), by
relative links, so the output folder can be moved or zipped whole.
"""
from __future__ import annotations

import html

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'; media-src 'self'")

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:20px;color:#222;max-width:1800px}
h1{font-size:20px}h1 small{font-weight:normal;color:#666;font-size:13px}
h2{font-size:16px;margin-top:28px}h3{font-size:14px;margin:14px 0 4px}
p.lead{font-size:17px;font-weight:600;margin:6px 0}
ul.facts,ul.problems{margin:4px 0;padding-left:20px;max-width:1100px}ul.problems li{color:#8a1f11}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 6px;vertical-align:top}
th{background:#f3f3f3;cursor:pointer;user-select:none;position:sticky;top:0;z-index:1}
th[title]{text-decoration:underline dotted #999}
th.asc:after{content:" \\25B2"}th.desc:after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.unchecked{color:#777;font-style:italic;cursor:help;text-decoration:underline dotted #aaa}
tr.failed td{background:#fde8e8}tr.fail td{background:#fff0e0}tr.warn td{background:#fffbe0}
video{background:#000;display:block}
.thumbs{white-space:nowrap}.thumbs img{height:56px;margin-right:2px}.thumbs img.pair{height:96px}
th.reason{min-width:220px}td.reason{max-width:380px;font-size:12px}td.reason ul{margin:0;padding-left:0;list-style:none}
td.reason li{margin-bottom:3px}td.reason li.quiet{color:#777}
.lvl{display:inline-block;font-size:10px;font-weight:700;text-transform:uppercase;padding:0 4px;
 border-radius:3px;margin-right:4px;color:#fff;background:#b8860b}.lvl.fail{background:#c0392b}
.plots img{margin:4px;border:1px solid #ddd}
.filters{margin:6px 0}.filters label{margin-right:14px}
"""

JS = """
function sortTable(th, desc){
  var table=th.closest('table'), body=table.tBodies[0], idx=Array.prototype.indexOf.call(th.parentNode.children, th);
  var rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){
    var x=a.cells[idx].getAttribute('data-v'), y=b.cells[idx].getAttribute('data-v');
    var nx=parseFloat(x), ny=parseFloat(y), r;
    if(!isNaN(nx)&&!isNaN(ny)) r=nx-ny; else if(isNaN(nx)!==isNaN(ny)) return isNaN(nx)?1:-1;
    else r=String(x).localeCompare(String(y));
    return desc?-r:r;});
  rows.forEach(function(r){body.appendChild(r);});
  Array.prototype.forEach.call(th.parentNode.children,function(h){h.classList.remove('asc','desc');});
  th.classList.add(desc?'desc':'asc');
}
function filterRows(){
  var sel=document.getElementById('show'), text=document.getElementById('find').value.toLowerCase();
  var show=' '+sel.options[sel.selectedIndex].getAttribute('data-outcomes')+' ', shown=0;
  document.querySelectorAll('#clips tbody tr').forEach(function(tr){
    var ok=(show===' * '||show.indexOf(' '+tr.getAttribute('data-outcome')+' ')>=0)
      &&tr.getAttribute('data-clip').toLowerCase().indexOf(text)>=0;
    tr.hidden=!ok; if(ok) shown++;});
  document.getElementById('shown').textContent=shown+' shown';
}
document.addEventListener('DOMContentLoaded',function(){
  document.querySelectorAll('#clips th[data-col]').forEach(function(th){
    th.addEventListener('click',function(){sortTable(th, th.classList.contains('asc'));});});
  var m=/sort=(-?)([A-Za-z0-9_]+)/.exec(location.hash);
  if(m){var th=document.querySelector('#clips th[data-col="'+m[2]+'"]'); if(th) sortTable(th, m[1]==='-');}
  var s=/show=([a-z]+)/.exec(location.hash), sel=document.getElementById('show');
  if(s&&sel&&sel.querySelector('option[value="'+s[1]+'"]')){sel.value=s[1];}
  if(sel){sel.addEventListener('change',filterRows);document.getElementById('find').addEventListener('input',filterRows);filterRows();}
});
"""

#: The filter's choices (``report.html#show=NAME``): (name, label, the row outcomes it shows; see
#: :func:`pipeline.report_summary.outcome`, ``*`` for all).
FILTERS = (("all", "all clips", "*"),
           ("attention", "needs a look (failed or warnings)", "failed qc_fail warn"),
           ("failed", "failed", "failed qc_fail"), ("warn", "with warnings", "warn"),
           ("ok", "ok", "ok"), ("pending", "not rendered yet", "pending"))


def filter_bar() -> str:
    """The clips table's filter: a choice of outcomes and a clip id search box."""
    options = "".join(f"<option value='{name}' data-outcomes='{outcomes}'>{html.escape(label)}"
                      "</option>" for name, label, outcomes in FILTERS)
    return ("<div class='filters'><label>Show <select id='show'>" + options + "</select></label>"
            "<label>Clip id contains <input id='find' type='search' size='18'></label>"
            "<span id='shown'></span></div>")


def page(title: str, heading: str, sections: list[str]) -> str:
    """The whole document around the report's ``sections`` (HTML strings)."""
    return "\n".join([
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style><script>{JS}</script></head><body>",
        f"<h1>{heading}</h1>", *sections, "</body></html>"])
