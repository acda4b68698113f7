/// The live status page the monitoring listener serves at `/`: one HTML document with its script
/// and style inline (no build step, nothing fetched from elsewhere). It polls the JSON endpoints
/// every second and draws messages per second in and out over the last two minutes.
enum StatusPage {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Relay hub</title>
        <style>
          :root { --fg: #1d2330; --muted: #6b7385; --line: #e3e6ec; --in: #2f6fdf; --out: #d9622b; }
          * { box-sizing: border-box; }
          body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: #f6f7f9; }
          header { display: flex; align-items: baseline; gap: 1.5em; padding: 14px 24px; background: #1d2330; color: #fff; }
          header h1 { margin: 0; font-size: 18px; }
          header span { color: #aab2c5; }
          main { padding: 16px 24px; display: grid; gap: 16px; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); }
          section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 16px; overflow-x: auto; }
          section.wide { grid-column: 1 / -1; }
          h2 { margin: 0 0 8px; font-size: 14px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
          .numbers { display: flex; flex-wrap: wrap; gap: 8px 28px; }
          .numbers div { min-width: 110px; }
          .numbers b { display: block; font-size: 22px; font-variant-numeric: tabular-nums; }
          .numbers small { color: var(--muted); }
          table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
          th, td { text-align: left; padding: 4px 8px 4px 0; border-bottom: 1px solid var(--line); white-space: nowrap; }
          th { color: var(--muted); font-weight: 500; }
          td.n, th.n { text-align: right; }
          canvas { width: 100%; height: 160px; }
          .legend span { margin-right: 16px; }
          .legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 2px; }
          #status.bad { color: #ff8f8f; }
        </style>
        </head>
        <body>
        <header><h1>Relay hub</h1><span id="server"></span><span id="uptime"></span><span id="status">…</span></header>
        <main>
          <section class="wide">
            <h2>Totals</h2>
            <div class="numbers">
              <div><b id="varz-connections">–</b><small>connections</small></div>
              <div><b id="varz-subscriptions">–</b><small>subscriptions</small></div>
              <div><b id="varz-services">–</b><small>services</small></div>
              <div><b id="varz-queues">–</b><small>queues</small></div>
              <div><b id="varz-in_msgs">–</b><small>messages in</small></div>
              <div><b id="varz-out_msgs">–</b><small>messages out</small></div>
              <div><b id="varz-slow_consumers">–</b><small>slow consumers</small></div>
              <div><b id="varz-permission_violations">–</b><small>permission refusals</small></div>
              <div><b id="rate-in">–</b><small>msg/s in</small></div>
              <div><b id="rate-out">–</b><small>msg/s out</small></div>
            </div>
          </section>
          <section class="wide">
            <h2>Messages per second</h2>
            <canvas id="plot" width="1200" height="160"></canvas>
            <div class="legend"><span><i style="background:var(--in)"></i>in</span><span><i style="background:var(--out)"></i>out</span></div>
          </section>
          <section><h2>Sessions</h2><table id="sessions"></table></section>
          <section><h2>Subjects</h2><table id="subjects"></table></section>
          <section><h2>Services</h2><table id="services"></table></section>
          <section><h2>Queues</h2><table id="queues"></table></section>
        </main>
        <script>
        "use strict";
        const samples = [];
        let last = null;
        const text = (id, value) => { document.getElementById(id).textContent = value; };
        const cell = (value, numeric) => { const td = document.createElement("td"); td.textContent = value ?? ""; if (numeric) td.className = "n"; return td; };
        function table(id, columns, rows) {
          const element = document.getElementById(id);
          element.replaceChildren();
          const head = document.createElement("tr");
          for (const [title, , numeric] of columns) { const th = document.createElement("th"); th.textContent = title; if (numeric) th.className = "n"; head.append(th); }
          element.append(head);
          for (const row of rows) {
            const tr = document.createElement("tr");
            for (const [, pick, numeric] of columns) tr.append(cell(pick(row), numeric));
            element.append(tr);
          }
          if (rows.length === 0) { const tr = document.createElement("tr"); tr.append(cell("none")); element.append(tr); }
        }
        async function json(path) { const response = await fetch(path, { cache: "no-store" }); return response.json(); }
        function plot() {
          const canvas = document.getElementById("plot"), g = canvas.getContext("2d");
          const width = canvas.width, height = canvas.height;
          g.clearRect(0, 0, width, height);
          const top = Math.max(10, ...samples.map(s => Math.max(s.in, s.out))) * 1.1;
          g.strokeStyle = "#e3e6ec"; g.fillStyle = "#6b7385"; g.font = "11px sans-serif";
          for (let i = 0; i <= 4; i++) { const y = height - i * height / 4; g.beginPath(); g.moveTo(0, y); g.lineTo(width, y); g.stroke(); if (i > 0) g.fillText(Math.round(top * i / 4), 4, y + 12); }
          for (const [key, color] of [["in", "#2f6fdf"], ["out", "#d9622b"]]) {
            g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
            samples.forEach((s, i) => { const x = width - (samples.length - 1 - i) * width / 119, y = height - s[key] / top * height; i ? g.lineTo(x, y) : g.moveTo(x, y); });
            g.stroke();
          }
        }
        async function refresh() {
          try {
            const [varz, connz, subsz, servicez, queuez, health] = await Promise.all([
              json("/varz"), json("/connz?limit=50&sort=msgs_from"), json("/subsz"), json("/servicez"), json("/queuez"), fetch("/healthz", { cache: "no-store" })]);
            for (const key of ["connections", "subscriptions", "services", "queues", "in_msgs", "out_msgs", "slow_consumers", "permission_violations"]) text("varz-" + key, varz[key]);
            text("server", varz.server_id + " · " + varz.version + " · " + varz.domain);
            text("uptime", "up " + Math.floor(varz.uptime_seconds) + " s");
            const status = document.getElementById("status");
            status.textContent = health.ok ? "healthy" : "unhealthy"; status.className = health.ok ? "" : "bad";
            const now = performance.now();
            if (last) {
              const seconds = (now - last.at) / 1000;
              const sample = { in: (varz.in_msgs - last.in) / seconds, out: (varz.out_msgs - last.out) / seconds };
              samples.push(sample); if (samples.length > 120) samples.shift();
              text("rate-in", Math.round(sample.in)); text("rate-out", Math.round(sample.out));
              plot();
            }
            last = { at: now, in: varz.in_msgs, out: varz.out_msgs };
            table("sessions", [["cid", c => c.cid, true], ["kind", c => c.kind + (c.tls ? " (tls)" : "")], ["node", c => c.node], ["address", c => c.ip],
              ["subs", c => c.subscriptions, true], ["in", c => c.in_msgs, true], ["out", c => c.out_msgs, true], ["pending", c => c.pending_bytes, true]], connz.connections);
            table("subjects", [["subject", s => s.subject], ["queue group", s => s.queue], ["subscriptions", s => s.subscriptions, true]], subsz.subscriptions);
            table("services", [["service", s => s.name], ["instances", s => s.instances, true], ["outstanding", s => s.outstanding, true],
              ["calls", s => Object.values(s.latency || {}).reduce((n, m) => n + m.calls, 0), true]], servicez.services);
            table("queues", [["queue", q => q.name], ["messages", q => q.messages, true], ["consumers", q => q.consumers, true],
              ["redelivered", q => q.redelivered, true], ["dead letters", q => q.deadLettered, true]], queuez.queues);
            document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
          } catch (error) {
            const status = document.getElementById("status"); status.textContent = "unreachable"; status.className = "bad";
          }
        }
        refresh();
        setInterval(refresh, 1000);
        </script>
        </body>
        </html>
        """#
}
