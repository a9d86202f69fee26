// The phone command room's route, in the app's router (router.js) and in the phone's own entry (phone-main.js).
export const phoneRoute = {
  path: "/phone/:tab(households|report|tasks)?",
  name: "phone",
  meta: { nav: true, titleKey: "nav.phone", permission: "tasks.read", layout: "phone" },
};
