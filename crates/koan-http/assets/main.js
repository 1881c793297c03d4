"use strict";
// Starts the page: the token button, the router, the event feed.

$("#token-button").addEventListener("click", () => askToken("Set the API token."));
window.addEventListener("hashchange", show);
show();
connectEvents();
refreshHealth();
setInterval(refreshHealth, 5000);
