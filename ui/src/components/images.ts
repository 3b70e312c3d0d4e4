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
