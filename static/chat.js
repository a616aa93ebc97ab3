// Progressive enhancement of the chat for browsers with JavaScript on. Everything works
// without this file (the chat frame streams HTML); with it, messages arrive over the /events
// server-sent events channel into the page itself, and the viewer count updates live.
// Only textContent is used to show user-supplied text, never HTML.
(function () {
  "use strict";
  var side = document.querySelector("aside.side");
  if (!side || !window.EventSource || !window.fetch || !window.JSON) { return; }
  var token = side.getAttribute("data-token") || "";
  var frame = side.querySelector("iframe.messages");
  var users = side.querySelector("iframe.users");
  if (!frame) { return; }
  var box = document.createElement("div");
  box.className = "chat-live";
  var list = document.createElement("div");
  list.className = "messages";
  list.setAttribute("role", "log");
  box.appendChild(list);

  function span(cls, text) {
    var el = document.createElement("span");
    el.className = cls;
    el.textContent = text;
    return el;
  }

  function add(m) {
    if (document.getElementById("m" + m.id)) { return; }
    var el = document.createElement("div");
    el.className = "msg" + (m.broadcaster ? " by-broadcaster" : "");
    el.id = "m" + m.id;
    var time = document.createElement("time");
    time.textContent = m.time;
    time.title = m.time + " UTC";
    el.appendChild(time);
    el.appendChild(document.createTextNode(" "));
    el.appendChild(span("who c" + (parseInt(m.colour, 10) || 0), m.name));
    if (m.broadcaster) { el.appendChild(span("badge", "broadcaster")); }
    else { el.appendChild(span("tag", "#" + m.tag)); }
    if (m.tripcode) { el.appendChild(span("trip", "!" + m.tripcode)); }
    el.appendChild(document.createTextNode(" "));
    el.appendChild(span("body", m.body));
    var empty = list.querySelector(".empty"); // "No messages yet"
    if (empty) { list.removeChild(empty); }
    list.insertBefore(el, list.firstChild); // column-reverse: the first child is the bottom
    while (list.childNodes.length > 300) { list.removeChild(list.lastChild); }
  }

  function hide(ids) {
    ids.forEach(function (id) {
      var el = document.getElementById("m" + id);
      if (el) { el.parentNode.removeChild(el); }
    });
  }

  function showCount(count) {
    try {
      var el = users && users.contentDocument && users.contentDocument.querySelector(".viewer-count");
      if (el) { el.textContent = String(count); }
    } catch (e) { /* the frame is between loads */ }
  }

  var source = null;
  function start() {
    fetch("/chat/messages.json?token=" + encodeURIComponent(token), {credentials: "same-origin"})
      .then(function (r) { if (!r.ok) { throw new Error("chat " + r.status); } return r.json(); })
      .then(function (data) {
        while (list.firstChild) { list.removeChild(list.firstChild); }
        data.messages.forEach(add);
        if (frame.parentNode) { frame.parentNode.replaceChild(box, frame); }
        if (source) { source.close(); }
        source = new EventSource("/events?since=" + encodeURIComponent(data.last_event) +
          "&token=" + encodeURIComponent(token));
        source.addEventListener("chat", function (e) { add(JSON.parse(e.data)); });
        source.addEventListener("hide", function (e) { hide(JSON.parse(e.data).ids || []); });
        source.addEventListener("viewers", function (e) { showCount(JSON.parse(e.data).count); });
        source.addEventListener("resync", function () { start(); });
        document.documentElement.setAttribute("data-chat", "live");
      })
      .catch(function () { /* keep the no-JS frame: it works on its own */ });
  }
  start();
}());
