export * from '../gen/cgroups/v1/metrics';
