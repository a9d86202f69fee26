// The households list the server writes into phone.html for the user of the session cookie (cityops/web/firstview.py),
// painted before any script on a poor connection. The app removes it once its own list (or its message) is on screen.

/** Remove the server's list. */
export function dropFirstView(doc = document) {
  const el = doc.getElementById("first-view");
  if (el) el.remove();
}
