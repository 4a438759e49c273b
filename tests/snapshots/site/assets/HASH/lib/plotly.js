// Plotly (vendored partial bundle, static/vendor/plotly) for the few charts that need real interaction.
// Loaded on first use by the views that draw them; no other view pays for it.
let promise = null;

export function loadPlotly() {
  promise ||= new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = new URL("../vendor/plotly/plotly-basic.min.js", import.meta.url).href;
    s.onload = () => resolve(window.Plotly);
    s.onerror = () => { promise = null; reject(new Error("the chart library (vendor/plotly/plotly-basic.min.js) could not be loaded")); };
    document.head.append(s);
  });
  return promise;
}

// Colours and fonts from the page's theme, so charts follow light and dark mode.
export function themeLayout(extra = {}) {
  const css = getComputedStyle(document.documentElement);
  const fg = css.getPropertyValue("--fg").trim(), line = css.getPropertyValue("--line").trim();
  return {
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", font: { color: fg, size: 12, family: "system-ui, sans-serif" },
    margin: { l: 56, r: 16, t: 16, b: 48 }, xaxis: { gridcolor: line, zerolinecolor: line }, yaxis: { gridcolor: line, zerolinecolor: line },
    legend: { orientation: "h", y: -0.25 }, ...extra,
  };
}

export const plotConfig = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
