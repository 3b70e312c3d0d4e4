// Hypedeck's page: one React root. A link's API and token are taken off the address bar before
// anything renders, and again when a link's fragment arrives without a reload (a link clicked
// while the page is open); the page then decides about that link as about the first. The
// desktop shell is told once the first frame is painted (start-up benchmark); in a browser that
// call does nothing.
import "./style.css";

import { StrictMode } from "react";
import { createRoot } from "react-dom/client";

import { App } from "./components/App";
import { takeLink, type Link } from "./connection";
import { firstPaint } from "./desktop";

const element = document.getElementById("root");
if (element === null) throw new Error("index.html lacks #root");
const root = createRoot(element);
const render = (link: Link | null): void =>
  root.render(
    <StrictMode>
      <App link={link} onFirstPaint={firstPaint} />
    </StrictMode>,
  );
render(takeLink());
// Registered before any view's own hashchange listener, so the route never sees the link.
window.addEventListener("hashchange", () => {
  const link = takeLink();
  if (link !== null) render(link);
});
