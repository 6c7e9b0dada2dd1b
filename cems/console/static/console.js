// The queue refreshes itself: fetch the rows every data-refresh seconds and swap them in (no library).
(function () {
  var body = document.getElementById("queue-rows");
  if (!body) return;
  var every = (parseInt(body.getAttribute("data-refresh"), 10) || 15) * 1000;
  var stamp = document.getElementById("updated");
  function load() {
    fetch(body.getAttribute("data-src"), { credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401) { window.location = "/login"; return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html !== null) {
          body.innerHTML = html;
          if (stamp) stamp.textContent = new Date().toLocaleTimeString("zh-CN");
        }
      })
      .catch(function () { if (stamp) stamp.textContent = "连接中断，重试中"; });
  }
  setInterval(load, every);
})();
