// Hypedeck's page: one React root. The desktop shell is told once the first frame is painted
// (start-up benchmark); in a browser that call does nothing.
import "./style.css";

import { StrictMode } from "react";
import { createRoot } from "react-dom/client";

import { App } from "./components/App";
import { firstPaint } from "./desktop";

const root = document.getElementById("root");
if (root === null) throw new Error("index.html lacks #root");
createRoot(root).render(
  <StrictMode>
    <App onFirstPaint={firstPaint} />
  </StrictMode>,
);
