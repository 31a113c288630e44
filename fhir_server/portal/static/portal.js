/* The personal link is PORTAL_URL#<token>: the fragment never reaches a server. This script
   moves it into the form (POST body), removes it from the address bar and history, and sends the
   form. Without JavaScript, the page asks for the code to be pasted. */
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
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", openLink);
  } else {
    openLink();
  }
})();
