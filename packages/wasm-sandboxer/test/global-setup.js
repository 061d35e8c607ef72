module.exports = async function globalSetup() {
  const { buildTestdata } = await import('../scripts/build-testdata.mjs');
  buildTestdata();
};
