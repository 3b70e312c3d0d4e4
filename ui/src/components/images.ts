// Image pulls: start one and follow it to `ready`, reporting progress on the way.
import type Hypeman from "@onkernel/hypeman";

export type Image = Hypeman.Image & { bytes_done?: number | null; bytes_total?: number | null };

/** Pulls `name` (a no-op for an image already there) and resolves once it is ready. */
export async function pullImage(
  api: Hypeman,
  name: string,
  onProgress: (image: Image) => void,
  signal: AbortSignal,
): Promise<Image> {
  let image = (await api.images.create({ name })) as Image;
  onProgress(image);
  while (image.status !== "ready") {
    if (image.status === "failed") throw new ImagePullError(image.error ?? `pulling ${name} failed`);
    await new Promise((r) => setTimeout(r, 400));
    if (signal.aborted) throw new ImagePullError("cancelled");
    image = (await api.images.get(image.name)) as Image;
    onProgress(image);
  }
  return image;
}

export class ImagePullError extends Error {
  override name = "image_pull_failed";
}

/** What the create form knows about an image's own command. */
export type ImageLookup =
  | { state: "looking" }
  | { state: "known"; entrypoint: string[]; cmd: string[] }
  /** Not pulled yet (or the server cannot say): known after the pull. */
  | { state: "unknown" };

/**
 * The image's Entrypoint and Cmd when the server has it ready (`GET /images/{name}`); "unknown"
 * for an image not pulled yet, still pulling, or a server that cannot tell.
 */
export async function lookUpImage(api: Hypeman, name: string, signal: AbortSignal): Promise<ImageLookup> {
  try {
    const image = await api.images.get(name, { signal, maxRetries: 0 });
    if (image.status !== "ready") return { state: "unknown" };
    return { state: "known", entrypoint: image.entrypoint ?? [], cmd: image.cmd ?? [] };
  } catch {
    return { state: "unknown" };
  }
}
