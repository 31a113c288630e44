/* The personal link is PORTAL_URL#<token>: the fragment never reaches a server. This script
   moves it into the form (POST body), removes it from the address bar and history, and sends the
   form; also when the link is opened in a tab already showing this page (the browser then only
   changes the fragment, without loading the page again). Without JavaScript, the page asks for
   the code to be pasted. */
(function () {
  "use strict";
  function openLink() {
    var token = window.location.hash.replace(/^#/, "");
    var form = document.getElementById("lien");
    var field = document.getElementById("jeton");
    if (!token || !form || !field) {
      return;
    }
    field.value = token;
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    form.submit();
  }
  window.addEventListener("hashchange", openLink);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", openLink);
  } else {
    openLink();
  }
})();
