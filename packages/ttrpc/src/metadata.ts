import { Metadata, MetadataInit, toMetadata } from './messages';

/** Metadata key containerd uses to carry the namespace over ttrpc (gRPC uses `containerd-namespace`). */
export const NAMESPACE_KEY = 'containerd-namespace-ttrpc';

/** Copy of `init` with the containerd namespace set (replacing any previous value). */
export function withNamespace(init: MetadataInit | undefined, namespace: string): Metadata {
  const md = toMetadata(init);
  md.set(NAMESPACE_KEY, [namespace]);
  return md;
}
