(function () {
  var sections = Array.prototype.slice.call(document.querySelectorAll("section.cluster"));
  var ids = sections.map(function (s) { return s.id; });
  var pick = document.getElementById("pick");
  function current() { var i = ids.indexOf(location.hash.slice(1)); return i < 0 ? 0 : i; }
  function go(i) { location.hash = ids[(i + ids.length) % ids.length]; }
  function sync() { pick.value = ids[current()]; }
  pick.addEventListener("change", function () { location.hash = pick.value; });
  window.addEventListener("hashchange", sync);
  document.addEventListener("keydown", function (event) {
    if (event.target && event.target.tagName === "SELECT") { return; }
    if (event.key === "ArrowRight") { go(current() + 1); event.preventDefault(); }
    if (event.key === "ArrowLeft") { go(current() - 1); event.preventDefault(); }
  });
  sync();
})();
