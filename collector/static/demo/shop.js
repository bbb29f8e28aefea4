// The demo shop's own code: a catalogue and a cart kept in the shop's own localStorage.
// It tracks only through the public command function yc(...), as any shop would.
var shop = {
  currency: "USD",
  products: {
    mug: { name: "Yespo mug", price: 12.5, page: "product-mug.html", image: "img/mug.svg" },
    tee: { name: "Yespo T-shirt", price: 20, page: "product-tee.html", image: "img/tee.svg" },
  },
  cart: function () {
    try {
      return JSON.parse(localStorage.getItem("demo_cart")) || [];
    } catch (e) {
      return [];
    }
  },
  // Keep the new cart and tell Yespo about the whole of it.
  save: function (cart) {
    localStorage.setItem("demo_cart", JSON.stringify(cart));
    yc("cartUpdated", {
      products: cart.map(function (line) {
        var p = shop.products[line.id];
        return { productId: line.id, quantity: line.quantity, price: p.price, name: p.name };
      }),
      currencyCode: shop.currency,
    });
    shop.badge();
  },
  add: function (id) {
    var cart = shop.cart(), line = cart.find(function (l) { return l.id === id; });
    if (line) line.quantity += 1;
    else cart.push({ id: id, quantity: 1 });
    shop.save(cart);
  },
  remove: function (id) {
    shop.save(shop.cart().filter(function (l) { return l.id !== id; }));
  },
  total: function (cart) {
    return cart.reduce(function (sum, l) { return sum + l.quantity * shop.products[l.id].price; }, 0);
  },
  url: function (path) {
    return new URL(path, location.href).href;
  },
  badge: function () {
    var el = document.getElementById("cart-count");
    if (el) el.textContent = shop.cart().reduce(function (n, l) { return n + l.quantity; }, 0);
  },
  // Who logged in on the Account page (the demo's own memory; the collector has its own).
  user: function () {
    return localStorage.getItem("demo_user") || "";
  },
  logIn: function (email) {
    // The visitor is known from now on: the collector delivers what it held for them.
    yc("identify", { email: email });
    localStorage.setItem("demo_user", email);
    shop.note();
  },
  // What happens to this visitor's events, on every page.
  note: function () {
    var main = document.querySelector("main");
    if (!main) return;
    var note = document.getElementById("demo-note");
    if (!note) {
      note = document.createElement("aside");
      note.id = "demo-note";
      main.parentNode.insertBefore(note, main);
    }
    var user = shop.user();
    note.textContent = "";
    var status = document.createElement("p");
    if (user) {
      status.appendChild(document.createTextNode("Logged in as "));
      status.appendChild(document.createElement("b")).textContent = user;
      status.appendChild(document.createTextNode(": your events go to Yespo as you click."));
    } else {
      status.innerHTML =
        "You are not logged in, so your events <b>wait in the collector</b>: Yespo cannot " +
        "use an event without a contact. <a href='account.html'>Log in</a> or check out, " +
        "and they go to Yespo, in the order you clicked.";
    }
    var watch = document.createElement("p");
    watch.innerHTML =
      "Watch them live in the collector's <a id='inspect-link' href='/inspect'>inspector</a> " +
      "(with <code>COLLECTOR_INSPECT_KEY</code> set): each event as it arrives, what it " +
      "became, held, released and delivered. With the project's Yespo stand-in, " +
      "<code>/_standin/events</code> on it shows what Yespo got.";
    note.appendChild(status);
    note.appendChild(watch);
  },
};
document.addEventListener("DOMContentLoaded", function () {
  shop.badge();
  shop.note();
});
