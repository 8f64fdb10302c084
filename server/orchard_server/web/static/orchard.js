// The web view's pages: poll the read-only JSON API and redraw. No framework,
// no CDN: Chart.js is served from this package (chart.umd.min.js).
"use strict";
const orchard = (() => {
  const token = new URLSearchParams(location.search).get("token");
  const withToken = (url) => (token ? `${url}?token=${encodeURIComponent(token)}` : url);
  const text = (value) => document.createTextNode(value === null || value === undefined ? "" : String(value));
  const cell = (row, value, cls) => {
    const td = row.insertCell();
    if (value instanceof Node) td.appendChild(value); else td.appendChild(text(value));
    if (cls) td.className = cls;
    return td;
  };
  const stamp = () => { document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`; };
  const get = async (url) => {
    const response = await fetch(withToken(url));
    if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
    return response.json();
  };
  const roundText = (f) => `${f.rounds_completed} of ${f.num_rounds} done` + (f.state === "running" && f.round > f.rounds_completed ? ` (round ${f.round} in progress)` : "");
  const kinds = (f) => Object.entries(f.clients_by_kind).map(([k, n]) => `${n} ${k}`).join(", ") || "none";
  const every = (seconds, fn) => { fn().catch(console.error); setInterval(() => fn().catch(console.error), seconds * 1000); };

  function index() {
    document.getElementById("metrics").href = withToken("/metrics");
    every(2, async () => {
      const data = await get("/api/federations");
      const body = document.querySelector("#federations tbody");
      body.replaceChildren();
      for (const f of data.federations) {
        const row = body.insertRow();
        row.dataset.federation = f.name;
        const link = document.createElement("a");
        link.href = withToken(`/federations/${encodeURIComponent(f.name)}`);
        link.textContent = f.name;
        cell(row, link);
        cell(row, f.model_id);
        cell(row, f.strategy);
        cell(row, roundText(f));
        cell(row, f.state + (f.reason ? `: ${f.reason}` : ""), `state-${f.state}`);
        cell(row, f.phase || "-");
        cell(row, kinds(f));
      }
      stamp();
    });
  }

  function chart(id, series) {
    const colours = ["#2f5d3a", "#c0392b", "#2c6fbb", "#b7950b"];
    return new Chart(document.getElementById(id), {
      type: "line",
      data: { labels: [], datasets: series.map(([key, label], i) => ({ key, label, data: [], borderColor: colours[i], backgroundColor: colours[i], spanGaps: true })) },
      options: { animation: false, scales: { x: { title: { display: true, text: "round" } } } },
    });
  }

  function redraw(c, curves) {
    c.data.labels = curves.map((p) => p.round);
    for (const ds of c.data.datasets) ds.data = curves.map((p) => p[ds.key]);
    c.update();
    c.canvas.dataset.points = String(curves.length);
  }

  function federation() {
    const name = decodeURIComponent(location.pathname.split("/").pop());
    document.getElementById("name").textContent = name;
    document.getElementById("home").href = withToken("/");
    const loss = chart("loss-chart", [["train_loss", "train (fit)"], ["distributed_loss", "distributed"], ["centralized_loss", "centralized"]]);
    const accuracy = chart("accuracy-chart", [["distributed_accuracy", "distributed"], ["centralized_accuracy", "centralized"]]);
    every(1, async () => {
      const f = await get(`/api/federations/${encodeURIComponent(name)}`);
      const summary = document.getElementById("summary");
      summary.replaceChildren();
      const p = document.createElement("p");
      p.appendChild(text(`Model ${f.model_id}, strategy ${f.strategy}, ${roundText(f)}, phase ${f.phase || "-"}, state `));
      const state = document.createElement("span");
      state.className = `state-${f.state}`;
      state.id = "state";
      state.textContent = f.state + (f.reason ? `: ${f.reason}` : "");
      p.appendChild(state);
      p.appendChild(text(`. Clients: ${kinds(f)}.`));
      summary.appendChild(p);

      const clients = document.querySelector("#clients tbody");
      clients.replaceChildren();
      for (const c of f.clients) {
        const row = clients.insertRow();
        cell(row, c.display_name); cell(row, c.framework || "unknown"); cell(row, c.role); cell(row, c.partition_id);
        const progress = c.progress;
        if (progress) {
          const bar = document.createElement("span");
          bar.className = "bar";
          const fill = document.createElement("span");
          fill.style.width = `${Math.round(progress.fraction * 100)}%`;
          bar.appendChild(fill);
          const wrap = document.createElement("span");
          wrap.appendChild(bar);
          wrap.appendChild(text(` ${Math.round(progress.fraction * 100)}%` + (progress.epoch ? `, epoch ${progress.epoch}` : "") + (progress.examples_per_second ? `, ${progress.examples_per_second.toFixed(0)} ex/s` : "")));
          cell(row, wrap);
        } else cell(row, "-");
      }

      const timeline = document.querySelector("#timeline tbody");
      timeline.replaceChildren();
      for (const r of [...f.timeline].reverse()) {
        const row = timeline.insertRow();
        cell(row, r.round);
        const phases = document.createElement("span");
        for (const ph of r.phases) {
          const tag = document.createElement("span");
          tag.className = ph.seconds === null ? "phase running" : "phase";
          tag.textContent = ph.seconds === null ? `${ph.phase}…` : `${ph.phase} ${ph.seconds.toFixed(2)}`;
          phases.appendChild(tag);
        }
        cell(row, phases);
        cell(row, r.duration_s === null ? "running" : `${r.duration_s.toFixed(2)} s`);
        cell(row, r.dropped.map((d) => `${d.client}: ${d.kind} (${d.reason})`).join("; ") || "-");
      }
      redraw(loss, f.curves);
      redraw(accuracy, f.curves);
      stamp();
    });
  }

  return { index, federation };
})();
