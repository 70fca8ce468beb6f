// Loaded between require.js and @jupyter-widgets/html-manager (see _config.yml, nb_ipywidgets_js).
// 1. Resolve AMD module URLs (the widget manager's fonts) against this _static folder, at any page depth,
//    instead of the page's own folder or a CDN.
// 2. html-manager 1.x typesets widget labels with the MathJax 2 API (MathJax.Hub.Queue); the book loads
//    MathJax 3, so map that call onto MathJax 3's typesetPromise.
(function () {
  var here = document.currentScript && document.currentScript.src;
  if (here && window.require && window.require.config) {
    window.require.config({ baseUrl: here.slice(0, here.lastIndexOf("/") + 1) });
  }
  function shim() {
    if (window.MathJax && !window.MathJax.Hub) {
      window.MathJax.Hub = {
        Queue: function (job) {
          var element = job && job[2];
          if (element && window.MathJax.typesetPromise) { window.MathJax.typesetPromise([element]); }
        }
      };
    }
  }
  shim();
  document.addEventListener("DOMContentLoaded", shim);
})();
