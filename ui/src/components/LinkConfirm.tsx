// The question a link to another API gets before the page uses it: where the link wants to
// connect, where the page is connected now, and two buttons. Nothing is sent to either server
// while it is shown.
import { isLoopback, type LinkQuestion } from "../connection";
import { hostOf } from "../remotes";

export function LinkConfirm({ question, onConnect, onKeep }: { question: LinkQuestion; onConnect: () => void; onKeep: () => void }) {
  const { link, saved, sameServer } = question;
  const host = hostOf(link.url);
  const savedHost = saved && hostOf(saved.url);
  const plain = new URL(link.url).protocol === "http:" && !isLoopback(link.url);
  return (
    <section id="link-confirm" className="card connect link-confirm" role="alertdialog" aria-labelledby="link-title" aria-describedby="link-warning">
      <h2 id="link-title">
        {sameServer ? "A link wants to change this page's API token" : saved ? "A link wants to switch this page to another server" : "A link wants to connect this page to a server"}
      </h2>
      <p>This page would use the Hypeman API at</p>
      <p className="link-host">
        <strong id="link-host">{host}</strong>
        <code id="link-url">{link.url}</code>
      </p>
      {saved ? (
        <p id="link-saved">
          {sameServer ? "The link carries a different API token for the server this page uses now, " : "This page is connected to "}
          <strong id="link-saved-host">{savedHost}</strong> (<code>{saved.url}</code>).
        </p>
      ) : (
        <p id="link-saved">This page has no connection yet.</p>
      )}
      <p id="link-warning" className="warn">
        Everything you do here goes to that server, including the credential values you type into Create and Rotate. Connect only if you
        expected this link and trust {host}.
        {plain && " The link uses plain http: the token and what you type would cross the network unencrypted."}
      </p>
      <div className="actions">
        <button id="link-connect" type="button" className="primary" onClick={onConnect}>
          Connect to {host}
          {sameServer && " with the link's token"}
        </button>
        <button id="link-keep" type="button" autoFocus onClick={onKeep}>
          {saved ? `Keep ${savedHost ?? ""}${sameServer ? " with the saved token" : ""}` : "Don't connect"}
        </button>
      </div>
    </section>
  );
}
