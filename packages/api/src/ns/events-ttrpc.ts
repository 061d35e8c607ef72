// containerd.services.events.ttrpc.v1.Events/Forward (ForwardRequest + EventsDefinition).
export * from '../gen/containerd/services/events/ttrpc/v1/events';
