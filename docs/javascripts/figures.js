// Draws every figure a page inlines (docs/hooks/figures.py) with the bundled plotly.js.
document.querySelectorAll(".plotly-figure").forEach((element) => {
  const figure = JSON.parse(element.querySelector("script").textContent);
  Plotly.newPlot(element, figure.data, figure.layout, { responsive: true, displaylogo: false });
});
