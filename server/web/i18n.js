// Every string the web pages show, in one place per language. Chinese is the default; the choice
// is remembered in localStorage. Elements with data-i18n="key" get the string as their text.

const LANG_KEY = 'lianxin.lang';

export const STRINGS = {
  zh: {
    appName: '连心桥',
    boardTitle: '响应看板',
    signIn: '登录',
    signOut: '退出',
    login: '账号',
    password: '密码',
    online: '已连接',
    connecting: '连接中…',
    offline: '连接断开，正在重连…',
    range: '时间范围',
    rangeToday: '今天',
    rangeWeek: '近7天',
    rangeMonth: '近30天',
    community: '社区',
    township: '全街道',
    received: '收到诉求',
    open: '未办结',
    overdueResponse: '超时未响应',
    overdueCompletion: '超时未办结',
    responseRate: '响应率',
    resolutionRate: '解决率',
    medianResponse: '首次响应中位数',
    overdueList: '超时诉求（最久的在前）',
    noOverdue: '没有超时诉求',
    workers: '网格员',
    grids: '网格',
    communities: '社区',
    rank: '排名',
    name: '姓名',
    grid: '网格',
    meanResponse: '平均响应',
    p90Response: '90%响应',
    reminders: '提醒',
    escalations: '升级',
    distribution: '首次响应时间分布',
    drillTitle: '诉求明细',
    close: '关闭',
    petition: '诉求',
    title: '标题',
    state: '状态',
    waited: '已等待',
    assignee: '负责人',
    notAllowed: '只有督查人员可以查看看板',
    badLogin: '账号或密码不对',
    none: '—',
    lessThan: '小于',
    over: '超过',
    minutes: '分钟',
    hours: '小时',
    days: '天',
    PETITION_STATE_SUBMITTED: '待响应',
    PETITION_STATE_RESPONDED: '处理中',
    PETITION_STATE_TRANSFERRED: '已转办',
    PETITION_STATE_ESCALATED: '已上报',
    PETITION_STATE_RESOLVED: '已办结待确认',
    PETITION_STATE_CLOSED: '已关闭',
    PETITION_STATE_WITHDRAWN: '已撤回',
  },
  en: {
    appName: 'Lianxin',
    boardTitle: 'Response board',
    signIn: 'Sign in',
    signOut: 'Sign out',
    login: 'Login',
    password: 'Password',
    online: 'Connected',
    connecting: 'Connecting…',
    offline: 'Disconnected, reconnecting…',
    range: 'Period',
    rangeToday: 'Today',
    rangeWeek: 'Last 7 days',
    rangeMonth: 'Last 30 days',
    community: 'Community',
    township: 'Whole township',
    received: 'Received',
    open: 'Open',
    overdueResponse: 'Response overdue',
    overdueCompletion: 'Completion overdue',
    responseRate: 'Response rate',
    resolutionRate: 'Resolution rate',
    medianResponse: 'Median first response',
    overdueList: 'Overdue petitions (oldest first)',
    noOverdue: 'No overdue petitions',
    workers: 'Workers',
    grids: 'Grids',
    communities: 'Communities',
    rank: 'Rank',
    name: 'Name',
    grid: 'Grid',
    meanResponse: 'Mean response',
    p90Response: '90th pct response',
    reminders: 'Reminders',
    escalations: 'Escalations',
    distribution: 'First-response time distribution',
    drillTitle: 'Petitions',
    close: 'Close',
    petition: 'Petition',
    title: 'Title',
    state: 'State',
    waited: 'Waiting',
    assignee: 'Assignee',
    notAllowed: 'Only supervisors can see the board',
    badLogin: 'Wrong login or password',
    none: '—',
    lessThan: 'under',
    over: 'over',
    minutes: 'min',
    hours: 'h',
    days: 'd',
    PETITION_STATE_SUBMITTED: 'Awaiting response',
    PETITION_STATE_RESPONDED: 'Being handled',
    PETITION_STATE_TRANSFERRED: 'Transferred',
    PETITION_STATE_ESCALATED: 'Escalated',
    PETITION_STATE_RESOLVED: 'Resolved, awaiting resident',
    PETITION_STATE_CLOSED: 'Closed',
    PETITION_STATE_WITHDRAWN: 'Withdrawn',
  },
};

/** The current language: 'zh' or 'en'. */
export function lang() {
  const stored = localStorage.getItem(LANG_KEY);
  return stored === 'en' ? 'en' : 'zh';
}

/** Chooses the language and rewrites the page's static strings. */
export function setLang(value) {
  localStorage.setItem(LANG_KEY, value === 'en' ? 'en' : 'zh');
  applyStrings();
}

/** The string for a key in the current language (the key itself when missing). */
export function t(key) {
  return STRINGS[lang()][key] ?? STRINGS.zh[key] ?? key;
}

/** Fills every element marked data-i18n with its string. */
export function applyStrings(root = document) {
  document.documentElement.lang = lang() === 'en' ? 'en' : 'zh-CN';
  for (const el of root.querySelectorAll('[data-i18n]')) {
    el.textContent = t(el.dataset.i18n);
  }
}

/** A duration in words: "35 分钟", "2.5 小时", "3 天". */
export function duration(ms) {
  const min = ms / 60000;
  if (min < 60) return `${Math.round(min)} ${t('minutes')}`;
  const h = min / 60;
  if (h < 48) return `${Math.round(h * 10) / 10} ${t('hours')}`;
  return `${Math.round((h / 24) * 10) / 10} ${t('days')}`;
}
