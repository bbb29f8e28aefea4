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
};
document.addEventListener("DOMContentLoaded", shop.badge);
