// Two sides measured in the same run take turns going first, so that load from elsewhere on the machine (and any
// warm-up one leaves for the other) hits both alike.

/** One side of a round: a sample is taken (and stored) by the function itself. */
export type Side = () => unknown;

/**
 * `rounds` rounds of the two sides `round(i)` returns: [a, b] in even rounds, [b, a] in odd ones. `round` runs before
 * either side, so what a round needs made (bundles and the like) is made before any clock starts.
 */
export async function alternate(rounds: number, round: (i: number) => readonly [Side, Side]): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    const [a, b] = round(i);
    if (i % 2 === 0) {
      await a();
      await b();
    } else {
      await b();
      await a();
    }
  }
}
