export * from '../gen/cgroups/v2/metrics';
