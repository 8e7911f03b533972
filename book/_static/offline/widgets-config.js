// Loaded between require.js and embed-amd.js on pages with widgets (see _config.yml).
(function () {
  // The widget manager's AMD modules find their fonts next to their own URL, which
  // RequireJS derives from the module name: point those names at the copy in the book.
  var here = new URL("html-manager", document.currentScript.src).href;
  window.require.config({paths: {"@jupyter-widgets": here, "@jupyter-widgets/html-manager/dist": here}});

  // ipywidgets typesets widget labels with MathJax 2's MathJax.Hub.Queue, but the
  // book loads MathJax 3 (deferred, so it has started by DOMContentLoaded).
  window.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (mj && mj.startup && !mj.Hub) {
      mj.Hub = {Queue: function (job) {
        return mj.startup.promise.then(function () { return mj.typesetPromise([job[2]]); });
      }};
    }
  });
})();
