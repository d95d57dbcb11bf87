// MathJax 2.7 configuration for pymdownx.arithmatex (generic mode). MathJax itself is
// served by the site (assets/mathjax/, copied from the jupyter-server-mathjax package by
// docs/_hooks/mathjax.py): formulas render offline. Loaded before assets/mathjax/MathJax.js.
window.MathJax = {
  jax: ["input/TeX", "output/SVG"],
  extensions: ["tex2jax.js"],
  TeX: {
    extensions: ["AMSmath.js", "AMSsymbols.js", "noErrors.js", "noUndefined.js"],
  },
  tex2jax: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
    // typeset only what arithmatex marked
    ignoreClass: ".*|",
    processClass: "arithmatex",
  },
  SVG: { font: "STIX-Web", linebreaks: { automatic: false } },
  showMathMenu: false,
  messageStyle: "none",
};

// Material's instant navigation (if enabled) swaps page content without a reload.
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && window.MathJax.Hub) {
      window.MathJax.Hub.Queue(["Typeset", window.MathJax.Hub]);
    }
  });
}
