// MathJax 2.7 configuration for pymdownx.arithmatex (generic mode). MathJax itself is
// served by the site (assets/mathjax/, copied from the jupyter-server-mathjax package by
// docs/_hooks/mathjax.py): formulas render offline. Loaded before assets/mathjax/MathJax.js.
window.MathJax = {
  // TeX input, HTML-CSS output with the STIX-Web fonts (the files that
  // jupyter-server-mathjax ships); AMS math and symbols are part of this configuration
  config: ["TeX-AMS-MML_HTMLorMML-full.js"],
  jax: ["input/TeX", "output/HTML-CSS"],
  extensions: ["tex2jax.js"],
  tex2jax: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
    // typeset only what arithmatex marked
    ignoreClass: ".*|",
    processClass: "arithmatex",
  },
  "HTML-CSS": {
    availableFonts: ["STIX-Web"],
    preferredFont: "STIX-Web",
    webFont: "STIX-Web",
    imageFont: null,
  },
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
