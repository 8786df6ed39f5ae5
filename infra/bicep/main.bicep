// Placeholder: the Azure deployment (Function App on Flex Consumption, Azure SQL, Storage,
// Event Hubs, Key Vault, the gpu-worker Container App) is written by a later issue.
// Until then this file only declares the parameters every module will share.
targetScope = 'resourceGroup'

@description('Short name used as a prefix for every resource.')
param name string = 'hartonomous'

@description('Azure region of the deployment.')
param location string = resourceGroup().location

output prefix string = '${name}-${location}'
