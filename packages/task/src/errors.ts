// The task API speaks google.rpc codes; every failure the service returns is a TtrpcError with one.
export { TtrpcError, Code } from '@kuasar/ttrpc';
